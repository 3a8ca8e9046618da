"""Running the app under uvicorn: a progress bar while the model loads, one line when ready,
connection limits (server/connections.py), and shutdown as documented.

On SIGTERM (or SIGINT) the server keeps listening and answers new requests 503 with
Retry-After while the requests in flight finish. Past `shutdown_timeout` the rest are cut: a
non-streaming one gets a JSON 503, a stream an error event then `[DONE]`. The process exits 0
only when nothing was cut; 1 when requests were cut, the model failed to load, or the engine
died. A second signal stops at once."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from hearth.server.app import ServerConfig, ServerState, create_app
from hearth.server.connections import ConnectionLimits, guarded_protocol

from tqdm import tqdm

from hearth import AsyncLLM

log = logging.getLogger("hearth")

_CUT_GRACE_S = 5.0  # after cutting, how long the cut responses get to be written


@dataclass
class ShutdownPolicy:
    timeout: float                    # seconds requests in flight get to finish after SIGTERM
    signal_at: float | None = None    # monotonic time of the first signal
    cut_at: float | None = None       # when the deadline cut the rest


class _DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM drains (see the module docstring) instead of closing the listener."""

    def __init__(self, config: uvicorn.Config, state: ServerState, policy: ShutdownPolicy) -> None:
        super().__init__(config)
        self._state, self._policy = state, policy

    def handle_exit(self, sig, frame) -> None:
        if self._policy.signal_at is not None:  # a second signal: stop now
            self.should_exit = True
            self.force_exit = True
            return
        self._policy.signal_at = time.monotonic()
        self._state.shutting_down = True
        log.info("shutting down: draining %d request(s) for up to %g s", self._state.in_flight,
                 self._policy.timeout)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        state, policy = self._state, self._policy
        if state.exit_status is not None:  # engine dead or model not loaded
            return True
        if policy.signal_at is None:
            return False
        if state.in_flight == 0:
            return True
        now = time.monotonic()
        if policy.cut_at is None and now >= policy.signal_at + policy.timeout:
            policy.cut_at = now
            cut = await state.cut_all()
            log.warning("shutdown timeout (%g s) reached: cutting %d request(s) still in flight", policy.timeout, cut)
        return policy.cut_at is not None and now >= policy.cut_at + _CUT_GRACE_S


def serve(model: str | None, *, host: str, port: int, config: ServerConfig, limits: ConnectionLimits,
          keep_alive_timeout: float, shutdown_timeout: float, engine_kwargs: dict[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit status."""

    def load() -> AsyncLLM:
        bar = tqdm(desc="loading model", unit="layer", file=sys.stderr, leave=False)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            return AsyncLLM(model, progress=progress, **engine_kwargs)
        finally:
            bar.close()

    config.ready_message = f"ready: serving {config.model_name!r} at http://{host}:{port}/v1 (docs at /docs)"
    if config.access_log:
        logging.getLogger("hearth.access").setLevel(logging.INFO)
    app = create_app(load, config)
    state: ServerState = app.state.hearth
    policy = ShutdownPolicy(shutdown_timeout)
    server = _DrainingServer(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                            http=guarded_protocol(limits), timeout_keep_alive=keep_alive_timeout,
                                            timeout_graceful_shutdown=_CUT_GRACE_S), state, policy)
    server.run()
    if state.exit_status is not None:
        return state.exit_status
    if state.num_cut:
        log.error("shutdown cut %d request(s) short; exiting with status 1", state.num_cut)
        return 1
    if policy.signal_at is not None:
        log.info("shutdown: every request in flight finished")
    return 0
