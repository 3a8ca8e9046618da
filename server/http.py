"""Running the app under uvicorn: a progress bar while the model loads, one line when ready,
and a graceful SIGTERM (new requests get 503 at once, requests in flight may finish)."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from tqdm import tqdm

from hearth import AsyncLLM
from hearth.server.app import ServerConfig, ServerState, create_app

DEFAULT_MODEL_NAME = "hearth-pystdlib"


class _GracefulServer(uvicorn.Server):
    """uvicorn stops accepting connections on SIGTERM and waits for open ones; this also makes
    requests that arrive on kept-alive connections meanwhile get a 503."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig, frame) -> None:
        self._state.shutting_down = True
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after draining, which would end the process "killed
        # by SIGTERM"; a clean drain is a normal exit (status 0)
        self._captured_signals.clear()


def serve(model: str | None, *, host: str, port: int, api_keys: tuple[str, ...], served_model_name: str | None,
          max_queued_requests: int | None, max_request_bytes: int, shutdown_timeout: float,
          engine_kwargs: dict[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit status."""
    name = served_model_name or (model if model is not None else DEFAULT_MODEL_NAME)

    def load() -> AsyncLLM:
        bar = tqdm(desc="loading model", unit="layer", file=sys.stderr, leave=False)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            return AsyncLLM(model, progress=progress, **engine_kwargs)
        finally:
            bar.close()

    config = ServerConfig(model_name=name, api_keys=api_keys, max_queued_requests=max_queued_requests,
                          max_body_bytes=max_request_bytes,
                          ready_message=f"ready: serving {name!r} at http://{host}:{port}/v1 (docs at /docs)")
    app = create_app(load, config)
    server = _GracefulServer(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                            timeout_graceful_shutdown=shutdown_timeout), app.state.hearth)
    server.run()
    return 0
