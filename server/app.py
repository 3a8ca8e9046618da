"""The HTTP face of hearth: OpenAI-compatible routes over AsyncLLM. The only place HTTP exists.

The model loads in a background thread after the server starts listening, so /health can say
"loading" (503) and then "ready" (200). Generation routes validate everything before queueing
(so a bad request is a 400, never a half-started stream), count requests in flight for the
queue limit (429), and abort a request as soon as its client goes away."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hearth import AsyncLLM, ContextLengthError, RequestOutput, SamplingParams
from hearth.server.errors import APIError, error_body, install_error_handlers
from hearth.server.metrics import ServerMetrics
from hearth.server.protocol import (ERROR_RESPONSES, ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                             TokenizeRequest)
from hearth.server.responses import (ChoiceState, ChunkEncoder, chat_response, chunk_object, completion_response, sse_event,
                              usage)

log = logging.getLogger("hearth")


@dataclass
class ServerConfig:
    """What the server needs besides the engine."""

    model_name: str
    api_keys: tuple[str, ...] = ()
    max_queued_requests: int | None = None   # requests waiting beyond max_num_seqs; None: no limit
    max_body_bytes: int = 1 << 20
    ready_message: str | None = None         # logged once the model is loaded


@dataclass
class ServerState:
    config: ServerConfig
    engine: AsyncLLM | None = None
    load_error: BaseException | None = None
    shutting_down: bool = False
    in_flight: int = 0
    metrics: ServerMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(lambda: self.engine.get_stats() if self.engine is not None else None)

    def ready_engine(self) -> AsyncLLM:
        if self.shutting_down:
            raise APIError(503, "the server is shutting down", code="shutting_down")
        if self.engine is None:
            if self.load_error is not None:
                raise APIError(503, f"the model failed to load: {self.load_error}", code="engine_dead")
            raise APIError(503, "the model is still loading", code="loading", headers={"Retry-After": "1"})
        if not self.engine.is_healthy:
            raise APIError(503, f"the engine has stopped: {self.engine.dead_error}", code="engine_dead")
        return self.engine


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, declared or streamed. The body is read
    here (at most limit + 1 bytes) and replayed to the app, so the check never depends on how
    the app reads it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._reject(send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect as usual

        await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        body = JSONResponse(error_body(413, f"request body over {self.max_bytes} bytes"), status_code=413)
        await body({"type": "http"}, None, send)


def create_app(load_engine: Callable[[], AsyncLLM], config: ServerConfig) -> FastAPI:
    """The FastAPI app; `load_engine` runs in a thread once the server is up."""
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def load():
            try:
                state.engine = await asyncio.to_thread(load_engine)
                if config.ready_message:
                    log.info(config.ready_message)
            except BaseException as exc:  # the server stays up to report it on /health
                state.load_error = exc
                log.exception("model failed to load")
        loader = asyncio.create_task(load())
        yield
        state.shutting_down = True
        loader.cancel()
        if state.engine is not None:
            await asyncio.to_thread(state.engine.shutdown)

    app = FastAPI(title="hearth", version="0.1", lifespan=lifespan,
                  description="OpenAI-compatible completions and chat over hearth's engine.")
    app.state.hearth = state
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    async def authorized(request: Request) -> None:
        if not config.api_keys:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        # compare against every key, always, so timing says nothing about which matched
        if not any([hmac.compare_digest(token.encode(), key.encode()) for key in config.api_keys]):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")

    def check_model(name: str | None) -> None:
        if name is not None and name != config.model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")

    @app.get("/health", tags=["ops"], responses={503: ERROR_RESPONSES[503]})
    async def health():
        try:
            state.ready_engine()
        except APIError as exc:
            return JSONResponse(error_body(503, exc.message, code=exc.code), status_code=503)
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

    @app.post("/tokenize", dependencies=[Depends(authorized)], responses=ERROR_RESPONSES)
    async def tokenize(body: TokenizeRequest):
        engine = state.ready_engine()
        check_model(body.model)
        if body.messages is not None:
            text = _render_chat(engine, [m.as_dict() for m in body.messages], body.add_generation_prompt)
            ids = engine.tokenizer.encode(text, add_special_tokens=False)
        else:
            ids = engine.tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.config.scheduler.max_model_len}

    @app.post("/detokenize", dependencies=[Depends(authorized)], responses=ERROR_RESPONSES)
    async def detokenize(body: DetokenizeRequest):
        engine = state.ready_engine()
        check_model(body.model)
        vocab = engine.config.model.vocab_size
        bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is out of range for vocab_size {vocab}", param="tokens")
        return {"prompt": engine.tokenizer.decode(body.tokens, skip_special_tokens=False)}

    @app.post("/v1/completions", dependencies=[Depends(authorized)], responses=ERROR_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        engine = state.ready_engine()
        check_model(body.model)
        prompts = _completion_prompts(body.prompt)
        sp = _params(lambda d: body.sampling_params(d, body.max_tokens, body.logprobs,
                                                   body.logprobs if body.echo and body.logprobs is not None else None),
                     engine)
        prepared = [_validate(engine, p, sp) for p in prompts]
        return await _run(state, request, body.stream, "completion", body, prepared, sp)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)], responses=ERROR_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        engine = state.ready_engine()
        check_model(body.model)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        sp = _params(lambda d: body.sampling_params(d, body.output_limit, logprobs), engine)
        text = _render_chat(engine, [m.as_dict() for m in body.messages], body.add_generation_prompt)
        prompt = {"prompt": text, "prompt_token_ids": engine.tokenizer.encode(text, add_special_tokens=False)}
        return await _run(state, request, body.stream, "chat", body, [_validate(engine, prompt, sp)], sp)

    return app


# ---------------------------------------------------------------------- helpers

def _completion_prompts(prompt) -> list:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    return list(prompt)


def _params(build: Callable[[SamplingParams], SamplingParams], engine: AsyncLLM) -> SamplingParams:
    try:
        return build(engine.get_default_sampling_params())
    except ValueError as exc:
        name = str(exc).split(" ", 1)[0]
        raise APIError(400, str(exc), param=name if name.isidentifier() else None) from None


def _validate(engine: AsyncLLM, prompt, sp: SamplingParams) -> dict:
    try:
        return engine.validate(prompt, sp)
    except ContextLengthError as exc:
        raise APIError(400, str(exc), param="messages" if isinstance(prompt, dict) else "prompt",
                       code="context_length_exceeded") from None
    except ValueError as exc:
        raise APIError(400, str(exc), param="prompt") from None


def _render_chat(engine: AsyncLLM, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return engine.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # template errors are the conversation's fault, not the server's
        raise APIError(400, f"chat template failed on these messages: {exc}", param="messages") from None


async def _run(state: ServerState, request: Request, stream: bool, kind: str, body, prepared: list[dict],
               sp: SamplingParams):
    """Admit (or 429), then stream or collect the results of every prompt."""
    engine = state.ready_engine()
    limit = state.config.max_queued_requests
    if limit is not None and state.in_flight >= engine.config.scheduler.max_num_seqs + limit:
        raise APIError(429, "too many requests in flight; retry shortly", code="queue_full",
                       headers={"Retry-After": "1"})
    rid = ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex
    meta = {"id": rid, "created": int(time.time()), "model": state.config.model_name}
    echo = bool(getattr(body, "echo", False))
    choices = [ChoiceState(i * sp.n + j, p, kind, sp.logprobs, echo) for i, p in enumerate(prepared)
               for j in range(sp.n)]
    state.in_flight += 1
    release = _once(lambda: setattr(state, "in_flight", state.in_flight - 1))
    gens = [engine.generate(p, sp, request_id=f"{rid}-{i}") for i, p in enumerate(prepared)]
    timers = [_Latency(state.metrics) for _ in prepared]
    if stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _TrackedStream(_sse(kind, meta, gens, timers, choices, sp.n, include_usage), release,
                              media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        collect = asyncio.ensure_future(_collect(gens, timers, choices, sp.n))
        watch = asyncio.ensure_future(_wait_disconnect(request))
        done, _ = await asyncio.wait({collect, watch}, return_when=asyncio.FIRST_COMPLETED)
        watch.cancel()
        if collect not in done:  # the client left: stop generating for it
            collect.cancel()
            await asyncio.gather(collect, return_exceptions=True)
            return JSONResponse(error_body(400, "client disconnected"), status_code=400)
        try:
            collect.result()
        except ValueError as exc:  # found by the engine rather than up front: still the request's fault
            raise APIError(400, str(exc)) from None
    finally:
        release()
    build = completion_response if kind == "completion" else chat_response
    return build(meta, choices, sp.n)


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            fn()
    return call


class _TrackedStream(StreamingResponse):
    """A streaming response that releases its in-flight slot however it ends (even when the
    client leaves before the first byte, and the body generator never starts)."""

    def __init__(self, content, release: Callable[[], None], **kwargs) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            await self.body_iterator.aclose()


async def _wait_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)


class _Latency:
    """Observes one prompt's stream into the latency histograms as its outputs are read."""

    __slots__ = ("metrics", "start", "last", "first")

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.start = self.last = time.monotonic()
        self.first = True

    def see(self, out: RequestOutput) -> None:
        m, now = self.metrics, time.monotonic()
        num = sum(len(c.token_ids) for c in out.outputs)
        if num:
            if self.first:
                m.time_to_first_token.observe(now - self.start)
                self.first = False
                if out.metrics is not None and out.metrics.queue_time is not None:
                    m.queue_time.observe(max(0.0, out.metrics.queue_time))
            else:
                m.inter_token_latency.observe((now - self.last) / num)
            self.last = now
        if out.finished:
            m.e2e_latency.observe(now - self.start)


async def _merged(gens: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, output) from several streams as they come; closing it cancels them all."""
    if len(gens) == 1:
        async for out in gens[0]:
            yield 0, out
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i, gen):
        try:
            async for out in gen:
                await queue.put((i, out))
        except BaseException as exc:
            await queue.put((i, exc))
            raise
        finally:
            await queue.put((i, done))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _collect(gens, timers: list[_Latency], choices: list[ChoiceState], n: int) -> None:
    merged = _merged(gens)
    try:
        async for i, out in merged:
            timers[i].see(out)
            for c in out.outputs:
                choices[i * n + c.index].add(c)
    finally:
        await merged.aclose()


async def _sse(kind: str, meta: dict, gens, timers: list[_Latency], choices: list[ChoiceState], n: int,
               include_usage: bool) -> AsyncIterator[bytes]:
    """Server-sent events: one chunk per delta per choice, usage on request, then [DONE]; an
    error mid-stream becomes an error event (the client has already had its 200)."""
    merged = _merged(gens)
    encoder = ChunkEncoder(meta, kind)
    try:
        for ch in choices:
            first = ch.first_chunk()
            if first is not None:
                yield encoder.chunk(ch.index, first)
        async for i, out in merged:
            timers[i].see(out)
            for c in out.outputs:
                ch = choices[i * n + c.index]
                delta = ch.add(c)
                if delta is not None:
                    yield encoder.chunk(ch.index, delta)
        if include_usage:
            yield sse_event({**meta, "object": chunk_object(kind), "choices": [], "usage": usage(choices, n)})
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        status = 400 if isinstance(exc, ValueError) else 500
        yield sse_event(error_body(status, f"{type(exc).__name__}: {exc}"))
    finally:
        await merged.aclose()
    yield b"data: [DONE]\n\n"
