"""Running a validated completion or chat request on the engine: admission, the engine streams of
its prompts, and the whole or streamed (SSE) response.

Every way a request can end is handled here and only here: it finishes; its client leaves
(the engine requests are aborted, their KV blocks freed); the engine fails it (a 500 naming the
cause, or an error event mid-stream); the engine dies (503); shutdown's deadline cuts it (a JSON
503, or an error event then [DONE])."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from itertools import count

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from hearth.server.errors import APIError, error_body
from hearth.server.metrics import ServerMetrics
from hearth.server.middleware import request_log
from hearth.server.responses import (
    ChoiceState,
    ChunkEncoder,
    chat_response,
    chunk_object,
    completion_response,
    sse_event,
    usage,
)
from hearth.server.state import LiveRequest, ServerState

from hearth import EngineDeadError, RequestOutput, SamplingParams

_live_ids = count()
_CUT_MESSAGE = "the server is shutting down and cut this request short; retry it elsewhere or later"


async def run_generation(state: ServerState, request: Request, stream: bool, kind: str, body,
                         prepared: list[dict], sp: SamplingParams):
    """Admit (429 / 400 when too big), then stream or collect the results of every prompt."""
    engine = state.ready_engine()
    num_tokens = sum(len(p["prompt_token_ids"]) for p in prepared)
    ticket = state.admission_for(engine).admit(len(prepared) * sp.n, num_tokens)
    rid = ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex
    meta = {"id": rid, "created": int(time.time()), "model": state.config.model_name}
    echo = bool(getattr(body, "echo", False))
    choices = [ChoiceState(i * sp.n + j, p, kind, sp.logprobs, echo) for i, p in enumerate(prepared)
               for j in range(sp.n)]
    live_id, live = next(_live_ids), LiveRequest([f"{rid}-{i}" for i in range(len(prepared))])
    state.live[live_id] = live
    fields = request_log(request.scope)
    fields["tokens_in"] = num_tokens

    def release() -> None:
        ticket.release()
        state.live.pop(live_id, None)
        fields["tokens_out"] = sum(ch.num_tokens for ch in choices)

    try:
        gens = [engine.generate(p, sp, request_id=live.engine_request_ids[i]) for i, p in enumerate(prepared)]
    except BaseException:
        release()
        raise
    timers = [_Latency(state.metrics) for _ in prepared]
    if stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _TrackedStream(_sse(kind, meta, gens, timers, choices, sp.n, include_usage, live), release,
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
        except EngineDeadError as exc:
            raise APIError(503, f"the engine stopped while running this request: {exc}", code="engine_dead",
                           headers={"Retry-After": "5"}) from None
        except RuntimeError as exc:  # the engine failed this request alone
            raise APIError(500, f"generation failed: {str(exc)[:300]}", code="generation_failed") from None
        if live.cut:
            raise APIError(503, _CUT_MESSAGE, code="shutting_down", headers={"Retry-After": "5"})
    finally:
        release()
    build = completion_response if kind == "completion" else chat_response
    return build(meta, choices, sp.n)


class _TrackedStream(StreamingResponse):
    """A streaming response that releases its admission however it ends (even when the client
    leaves before the first byte, and the body generator never starts)."""

    def __init__(self, content, release: Callable[[], None], **kwargs) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self._release()


async def _wait_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)


class _Latency:
    """Observes one prompt's stream into the latency histograms as its outputs are read."""

    __slots__ = ("first", "last", "metrics", "start")

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
        try:
            async for out in gens[0]:
                yield 0, out
        finally:
            await gens[0].aclose()
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


def _stream_error(exc: Exception) -> bytes:
    if isinstance(exc, ValueError):
        return sse_event(error_body(400, str(exc)[:500]))
    if isinstance(exc, EngineDeadError):
        return sse_event(error_body(503, f"the engine stopped while running this request: {exc}", code="engine_dead"))
    return sse_event(error_body(500, f"generation failed: {type(exc).__name__}: {str(exc)[:300]}",
                                code="generation_failed"))


async def _sse(kind: str, meta: dict, gens, timers: list[_Latency], choices: list[ChoiceState], n: int,
               include_usage: bool, live: LiveRequest) -> AsyncIterator[bytes]:
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
            if live.cut:
                break
            for c in out.outputs:
                ch = choices[i * n + c.index]
                delta = ch.add(c)
                if delta is not None:
                    yield encoder.chunk(ch.index, delta)
        if live.cut:
            yield sse_event(error_body(503, _CUT_MESSAGE, code="shutting_down"))
        elif include_usage:
            yield sse_event({**meta, "object": chunk_object(kind), "choices": [], "usage": usage(choices, n)})
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        yield _stream_error(exc)
    finally:
        await merged.aclose()
    yield b"data: [DONE]\n\n"
