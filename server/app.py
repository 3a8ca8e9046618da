"""The HTTP face of hearth: OpenAI-compatible routes over AsyncLLM. The only place HTTP exists.

The model loads in a background task after the server starts listening, so /health can say
"loading" (503) and then "ready" (200). Generation routes validate everything before queueing
(so a bad request is a 400, never a half-started stream); tokenizing and chat templates run on a
small worker pool, so a huge prompt delays only itself; server/generation.py admits and runs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from hearth.server.docs import install_docs
from hearth.server.errors import APIError, clip, error_body, install_error_handlers
from hearth.server.generation import run_generation
from hearth.server.middleware import AccessLog, RequestBody, request_log
from hearth.server.openapi import install_openapi
from hearth.server.protocol import (
    ERROR_RESPONSES,
    STREAM_RESPONSES,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeChat,
    TokenizeRequest,
)
from hearth.server.state import ServerConfig, ServerState
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hearth import AsyncLLM, ContextLengthError, SamplingParams

__all__ = ["ServerConfig", "ServerState", "create_app"]


def create_app(load_engine: Callable[[], AsyncLLM], config: ServerConfig) -> FastAPI:
    """The FastAPI app; `load_engine` runs in a thread once the server is up."""
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        supervisor = asyncio.create_task(state.supervise(load_engine))
        yield
        state.shutting_down = state.stopping = True
        supervisor.cancel()
        if state.engine is not None:
            await asyncio.to_thread(state.engine.shutdown)
        state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="hearth", version="0.1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible completions and chat over hearth's engine.")
    app.state.hearth = state
    install_error_handlers(app)
    install_docs(app)
    install_openapi(app, state)
    app.add_middleware(RequestBody, max_bytes=config.max_body_bytes, read_timeout=config.body_timeout)
    app.add_middleware(AccessLog, enabled=config.access_log)
    fingerprints = {key: hashlib.sha256(key.encode()).hexdigest()[:8] for key in config.api_keys}

    async def authorized(request: Request) -> None:
        if not config.api_keys:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        # compare against every key, always, so timing says nothing about which matched
        matches = [hmac.compare_digest(token.encode(), key.encode()) for key in config.api_keys]
        if not any(matches):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")
        request_log(request.scope)["key_id"] = fingerprints[config.api_keys[matches.index(True)]]

    def check_model(name: str | None) -> None:
        if name is not None and name != config.model_name:
            raise APIError(404, f"model {clip(name)} does not exist; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")

    @app.get("/health", tags=["ops"], responses={503: ERROR_RESPONSES[503]})
    async def health():
        try:
            state.ready_engine()
        except APIError as exc:
            return JSONResponse(error_body(503, exc.message, code=exc.code), status_code=503, headers=exc.headers)
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=[Depends(authorized)], responses=ERROR_RESPONSES)
    async def models():
        engine = state.ready_engine()
        return {"object": "list", "data": [{
            "id": config.model_name, "object": "model", "created": 0, "owned_by": "hearth",
            "max_model_len": engine.config.scheduler.max_model_len}]}

    for path, endpoint, deps in (("/health", health, []), ("/metrics", metrics, []),
                                 ("/v1/models", models, [Depends(authorized)])):
        # HEAD answers like GET without the body (uvicorn drops it); one operation in the schema
        app.add_api_route(path, endpoint, methods=["HEAD"], dependencies=deps, include_in_schema=False)

    @app.post("/tokenize", dependencies=[Depends(authorized)], responses=ERROR_RESPONSES)
    async def tokenize(body: TokenizeRequest):
        engine = state.ready_engine()
        check_model(body.model)
        if isinstance(body, TokenizeChat):
            messages = [m.as_dict() for m in body.messages]
            ids = await state.run_tokenizer(_encode_chat, engine, messages, body.add_generation_prompt)
        else:
            ids = await state.run_tokenizer(engine.tokenizer.encode, body.prompt, body.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.config.scheduler.max_model_len}

    @app.post("/detokenize", dependencies=[Depends(authorized)], responses=ERROR_RESPONSES)
    async def detokenize(body: DetokenizeRequest):
        engine = state.ready_engine()
        check_model(body.model)
        vocab = engine.config.model.vocab_size
        bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"token id {clip(bad, 40)} is out of range for vocab_size {vocab}", param="tokens")
        text = await state.run_tokenizer(lambda: engine.tokenizer.decode(body.tokens, skip_special_tokens=False))
        return {"prompt": text}

    @app.post("/v1/completions", dependencies=[Depends(authorized)], responses=STREAM_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        engine = state.ready_engine()
        check_model(body.model)
        _check_output_limits(engine, body, ("max_tokens",))
        prompts = _completion_prompts(body.prompt)
        if len(prompts) > config.max_prompts_per_request:
            raise APIError(400, f"{len(prompts)} prompts in one request; at most {config.max_prompts_per_request}",
                           param="prompt", code="request_too_large")
        sp = _params(lambda d: body.sampling_params(d, body.max_tokens, body.logprobs,
                                                   body.logprobs if body.echo and body.logprobs is not None else None),
                     engine)
        prepared = await state.run_tokenizer(lambda: [_validate(engine, p, sp) for p in prompts])
        return await run_generation(state, request, body.stream, "completion", body, prepared, sp)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)], responses=STREAM_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        engine = state.ready_engine()
        check_model(body.model)
        _check_output_limits(engine, body, ("max_tokens", "max_completion_tokens"))
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        sp = _params(lambda d: body.sampling_params(d, body.output_limit, logprobs), engine)
        messages = [m.as_dict() for m in body.messages]
        prepared = await state.run_tokenizer(_prepare_chat, engine, messages, body.add_generation_prompt, sp)
        return await run_generation(state, request, body.stream, "chat", body, [prepared], sp)

    return app


# ---------------------------------------------------------------------- helpers (worker-pool side)

def _completion_prompts(prompt) -> list:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    return list(prompt)


def _check_output_limits(engine: AsyncLLM, body, names: tuple[str, ...]) -> None:
    """Output lengths past the whole context are refused even when another field overrides them
    (the schema says so: its maximum is max_model_len)."""
    limit = engine.config.scheduler.max_model_len
    for name in names:
        value = getattr(body, name)
        if value is not None and value > limit:
            raise APIError(400, f"{name} ({clip(value, 40)}) is more than max_model_len ({limit})", param=name,
                           code="context_length_exceeded")


def _params(build: Callable[[SamplingParams], SamplingParams], engine: AsyncLLM) -> SamplingParams:
    try:
        return build(engine.get_default_sampling_params())
    except ValueError as exc:
        raise APIError(400, str(exc), param=_field_of(exc)) from None


def _field_of(exc: ValueError) -> str | None:
    """The parameter a ValueError from the engine names: its first word, by convention."""
    name = str(exc).split(" ", 1)[0].rstrip(":")
    return name if name.isidentifier() else None


def _validate(engine: AsyncLLM, prompt, sp: SamplingParams) -> dict:
    try:
        return engine.validate(prompt, sp)
    except ContextLengthError as exc:
        raise APIError(400, str(exc), param="messages" if isinstance(prompt, dict) else "prompt",
                       code="context_length_exceeded") from None
    except ValueError as exc:
        raise APIError(400, str(exc), param=_field_of(exc) or "prompt") from None


def _render_chat(engine: AsyncLLM, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return engine.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # template errors are the conversation's fault, not the server's
        raise APIError(400, f"chat template failed on these messages: {str(exc)[:300]}", param="messages") from None


def _encode_chat(engine: AsyncLLM, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    return engine.tokenizer.encode(_render_chat(engine, messages, add_generation_prompt), add_special_tokens=False)


def _prepare_chat(engine: AsyncLLM, messages: list[dict], add_generation_prompt: bool, sp: SamplingParams) -> dict:
    text = _render_chat(engine, messages, add_generation_prompt)
    prompt = {"prompt": text, "prompt_token_ids": engine.tokenizer.encode(text, add_special_tokens=False)}
    return _validate(engine, prompt, sp)
