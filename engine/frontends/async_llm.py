"""AsyncLLM: the engine for asyncio callers (the HTTP server).

The engine loop runs in its own thread, so a slow step never blocks the event loop. The event
loop side only validates and tokenizes prompts and passes commands (add, abort, stop) through a
queue; the engine thread applies them between steps, runs steps while there is work, and hands
each request's output deltas back to the event loop that asked for them. A failure inside one
request fails that request; a failure of the loop itself (an engine fault) fails every request
with the reason, and the engine reports itself dead from then on."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hearth.engine.core.engine_core import EngineStats
from hearth.engine.frontends.frontend import EngineFrontend, Prompt, request_failure
from hearth.engine.core.outputs import RequestError, RequestOutput
from hearth.engine.core.sampling_params import SamplingParams
from hearth.engine.frontends.sink import Sink, num_tokens, post

log = logging.getLogger("hearth")


FAULT_FILE_ENV = "HEARTH_TEST_ENGINE_FAULT_FILE"
"""Testing hook: while this file exists the engine loop raises at its next step (the file is
removed first, so the fault happens once). It lets tests kill a real engine loop in a real server
process, which no request can do any more."""


def _inject_fault(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        return
    raise RuntimeError(f"fault injected through {FAULT_FILE_ENV}")


class EngineDeadError(RuntimeError):
    """The engine loop has stopped (a fault, or shutdown); no request can run any more."""


class AsyncLLM:
    """Load a model and serve many concurrent requests from asyncio.

    >>> engine = AsyncLLM()  # the bundled default model
    >>> async for delta in engine.generate("def fib(n):", SamplingParams(max_tokens=32)):
    ...     print(delta.outputs[0].text, end="")

    Takes the same arguments as `LLM` (model, device, dtype, max_model_len, seed,
    kv_cache_memory, num_kv_blocks, block_size, max_num_seqs, max_num_batched_tokens,
    enable_prefix_caching), and `stream_interval`: after a request's first token, send its
    deltas every this many tokens (and when it finishes) rather than every token. 1, the
    default, streams each token; larger values trade smoothness for less per-delta work in
    the consumer (an HTTP server writes one event per delta). `stream_backlog_tokens`: when a
    request's reader falls this many tokens behind (an HTTP client that stopped reading), the
    engine pauses that request, keeping its KV blocks, until the reader has caught up to half;
    so a stalled stream costs no compute and buffers at most this much output."""

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu", dtype: str | None = None,
                 quantization: str | None = None, max_model_len: int | None = None,
                 seed: int | None = None, stream_interval: int = 1, stream_backlog_tokens: int = 256,
                 **engine_kwargs: Any) -> None:
        if not isinstance(stream_interval, int) or isinstance(stream_interval, bool) or stream_interval < 1:
            raise ValueError(f"stream_interval must be an integer >= 1, got {stream_interval!r}")
        if not isinstance(stream_backlog_tokens, int) or isinstance(stream_backlog_tokens, bool) \
                or stream_backlog_tokens < 1:
            raise ValueError(f"stream_backlog_tokens must be an integer >= 1, got {stream_backlog_tokens!r}")
        self.stream_interval, self.stream_backlog_tokens = stream_interval, stream_backlog_tokens
        self._frontend = EngineFrontend.load(model, device=device, dtype=dtype, quantization=quantization,
                                             max_model_len=max_model_len, seed=seed, **engine_kwargs)
        self.engine, self.tokenizer, self.config = self._frontend.engine, self._frontend.tokenizer, self._frontend.config
        self._commands: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._lock = threading.Lock()       # orders "is it alive?" against "it died"
        self._dead: EngineDeadError | None = None
        self._active: set[str] = set()      # request ids with a live stream (event-loop side)
        self._sinks: dict[str, Sink] = {}  # engine-thread side
        self._thread = threading.Thread(target=self._run, name="hearth-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API

    @property
    def is_healthy(self) -> bool:
        """True while the engine loop runs."""
        return self._dead is None and self._thread.is_alive()

    @property
    def errored(self) -> bool:
        """True once the engine loop has stopped; `dead_error` says why."""
        return not self.is_healthy

    @property
    def dead_error(self) -> EngineDeadError | None:
        return self._dead

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's generation_config.json defaults."""
        return self._frontend.default_params()

    def get_stats(self) -> EngineStats:
        """Counters and gauges of the engine (requests, KV cache, prefix cache, preemptions)."""
        return self.engine.stats()

    def validate(self, prompt: Prompt, sampling_params: SamplingParams | None = None) -> dict[str, Any]:
        """Tokenize and check a prompt now (ValueError / ContextLengthError if it cannot run);
        returns a prompt dict that generate() takes without tokenizing again."""
        params = self._frontend.params_list(sampling_params, 1)[0]
        text, ids = self._frontend.tokenize(prompt, params)
        return {"prompt": text, "prompt_token_ids": ids}

    async def generate(self, prompt: Prompt, sampling_params: SamplingParams | None = None,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Queue one prompt and yield its RequestOutput deltas as tokens arrive; the last has
        finished=True. Cancelling the iterating task (or closing the iterator) aborts the
        request. Bad input raises ValueError before anything is queued."""
        params = self._frontend.params_list(sampling_params, 1)[0]
        text, ids = self._frontend.tokenize(prompt, params)
        request_id = uuid.uuid4().hex if request_id is None else str(request_id)
        if request_id in self._active:
            raise ValueError(f"request id {request_id!r} is already in use")
        sink = Sink(asyncio.get_running_loop(), on_drain=lambda: self._send(("resume", request_id), quiet=True),
                    low=self.stream_backlog_tokens // 2)
        self._send(("add", request_id, text, ids, params, sink))
        self._active.add(request_id)
        finished = False
        try:
            while not finished:
                item = await sink.take()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
        finally:
            self._active.discard(request_id)
            if not finished:
                self._send(("abort", request_id), quiet=True)

    async def abort(self, request_id: str) -> None:
        """Stop a request now; its stream ends with finish_reason "abort". Unknown ids are ignored."""
        self._send(("abort", str(request_id)), quiet=True)

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop the engine loop; requests still running fail with EngineDeadError. Safe to call
        again, and after the loop died (then there is nothing left to stop)."""
        self._send(("stop",), quiet=True)
        if threading.current_thread() is not self._thread:  # never join oneself
            self._thread.join(timeout)

    # ------------------------------------------------------------------ event-loop side

    def _send(self, command: tuple, quiet: bool = False) -> None:
        with self._lock:
            if self._dead is not None:
                if quiet:
                    return
                raise self._dead
            self._commands.put(command)

    # ------------------------------------------------------------------ engine thread

    def _run(self) -> None:
        fault_file = os.environ.get(FAULT_FILE_ENV)
        try:
            while self._apply_commands(block=not self._frontend.has_work):
                if self._frontend.has_work:
                    if fault_file is not None:
                        _inject_fault(fault_file)
                    self._deliver(self._frontend.step())
            self._die(EngineDeadError("the engine was shut down"))
        except BaseException as exc:  # an engine fault: every request fails with the reason
            log.exception("engine loop failed")
            self._die(EngineDeadError(f"engine loop failed: {exc!r}"))

    def _apply_commands(self, block: bool) -> bool:
        """Apply queued commands (waiting for one when idle); False on stop."""
        while True:
            try:
                command = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            kind = command[0]
            if kind == "stop":
                return False
            if kind == "add":
                self._add(*command[1:])
            elif kind == "abort":
                self._abort(command[1])
            elif kind == "resume":
                self._resume(command[1])

    def _add(self, request_id: str, text: str | None, ids: list[int], params: SamplingParams,
             sink: Sink) -> None:
        try:
            self._frontend.add(text, ids, params, request_id=request_id)
        except Exception as exc:  # e.g. a duplicate id: this request fails, nothing else
            sink.put(exc if isinstance(exc, ValueError) else RequestError(f"request {request_id!r} failed: {exc!r}"))
            return
        self._sinks[request_id] = sink

    def _abort(self, request_id: str) -> None:
        state = self._frontend.states.get(request_id)
        sink = self._sinks.pop(request_id, None)
        if state is None:
            return
        self._frontend.abort(state)
        state.mark_aborted()
        if sink is not None:
            sink.put(state.output(delta=True))

    def _resume(self, request_id: str) -> None:
        sink, state = self._sinks.get(request_id), self._frontend.states.get(request_id)
        if sink is not None and sink.paused and state is not None:
            sink.paused = False
            self._frontend.pause(state, False)

    def _count(self, sink: Sink, state, item) -> None:
        """Add a posted delta to its sink's backlog; pause the request when the reader lags."""
        if not isinstance(item, RequestOutput):
            return
        sink.posted += num_tokens(item)
        if not sink.paused and not item.finished and sink.backlog > self.stream_backlog_tokens:
            sink.paused, sink.drain_asked = True, False
            self._frontend.pause(state)

    def _deliver(self, states) -> None:
        """Send one step's outputs: one wake-up per event loop, not one per request."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for state in states:
            sink = self._sinks.get(state.request_id)
            if sink is None:
                continue
            if (self.stream_interval > 1 and not state.finished and state.error is None
                    and state.started_streaming and state.unsent_tokens < self.stream_interval):
                continue  # hold it until the interval fills (the first token goes at once)
            item = self._output(state)
            self._count(sink, state, item)
            by_loop.setdefault(sink.loop, []).append((sink, item, state))
        for loop, entries in by_loop.items():
            delivered = post(loop, [(sink, item) for sink, item, _ in entries])
            for _, _, state in entries:
                if not delivered and not state.finished:
                    self._frontend.abort(state)  # its event loop is gone
                if not delivered or state.finished or state.error is not None:
                    self._sinks.pop(state.request_id, None)

    def _output(self, state) -> RequestOutput | BaseException:
        """The item to send for a state: its delta, or the request's failure."""
        if state.error is None:
            try:
                return state.output(delta=True)
            except Exception as exc:  # building this request's output failed: it alone fails
                state.error = exc
                self._frontend.abort(state)
        return request_failure(state)

    def _die(self, error: EngineDeadError) -> None:
        with self._lock:
            self._dead = error
            while True:  # fail adds that raced with the failure
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    break
                if command[0] == "add":
                    command[-1].put(error)
        for sink in self._sinks.values():
            sink.put(error)
        self._sinks.clear()
