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
import queue
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.core import EngineStats
from engine.frontend import EngineFrontend, Prompt
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams

log = logging.getLogger("hearth")


class EngineDeadError(RuntimeError):
    """The engine loop has stopped (a fault, or shutdown); no request can run any more."""


class _Sink:
    """Where the engine thread drops one request's outputs for its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()

    def put(self, item: RequestOutput | BaseException) -> bool:
        """False when the event loop is gone (nobody is listening any more)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        except RuntimeError:
            return False


class AsyncLLM:
    """Load a model and serve many concurrent requests from asyncio.

    >>> engine = AsyncLLM()  # the bundled default model
    >>> async for delta in engine.generate("def fib(n):", SamplingParams(max_tokens=32)):
    ...     print(delta.outputs[0].text, end="")

    Takes the same arguments as `LLM` (model, device, dtype, max_model_len, seed,
    kv_cache_memory, num_kv_blocks, block_size, max_num_seqs, max_num_batched_tokens,
    enable_prefix_caching)."""

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu", dtype: str | None = None,
                 quantization: str | None = None, max_model_len: int | None = None,
                 seed: int | None = None, **engine_kwargs: Any) -> None:
        self._frontend = EngineFrontend.load(model, device=device, dtype=dtype, quantization=quantization,
                                             max_model_len=max_model_len, seed=seed, **engine_kwargs)
        self.engine, self.tokenizer, self.config = self._frontend.engine, self._frontend.tokenizer, self._frontend.config
        self._commands: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._lock = threading.Lock()       # orders "is it alive?" against "it died"
        self._dead: EngineDeadError | None = None
        self._active: set[str] = set()      # request ids with a live stream (event-loop side)
        self._sinks: dict[str, _Sink] = {}  # engine-thread side
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
        sink = _Sink(asyncio.get_running_loop())
        self._send(("add", request_id, text, ids, params, sink))
        self._active.add(request_id)
        finished = False
        try:
            while not finished:
                item = await sink.queue.get()
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
        """Stop the engine loop; requests still running fail with EngineDeadError."""
        self._send(("stop",), quiet=True)
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
        try:
            while self._apply_commands(block=not self._frontend.has_unfinished):
                if self._frontend.has_unfinished:
                    for state in self._frontend.step():
                        self._deliver(state)
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

    def _add(self, request_id: str, text: str | None, ids: list[int], params: SamplingParams,
             sink: _Sink) -> None:
        try:
            self._frontend.add(text, ids, params, request_id=request_id)
        except Exception as exc:  # e.g. a duplicate id: this request fails, nothing else
            sink.put(exc if isinstance(exc, ValueError) else RuntimeError(f"request {request_id!r} failed: {exc!r}"))
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

    def _deliver(self, state) -> None:
        sink = self._sinks.get(state.request_id)
        if sink is None:
            return
        if state.error is not None:
            item: RequestOutput | BaseException = RuntimeError(
                f"request {state.request_id!r} failed: {state.error!r}")
        else:
            item = state.output(delta=True)
        delivered = sink.put(item)
        if not delivered and not state.finished:
            self._frontend.abort(state)  # its event loop is gone
        if not delivered or state.finished or state.error is not None:
            self._sinks.pop(state.request_id, None)

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
