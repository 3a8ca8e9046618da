"""What the server knows besides its routes: its settings, the engine it supervises, the work in
flight, and where shutdown stands.

The engine loads in a background task once the server listens (/health says "loading" until it
is up). A model that fails to load, or an engine loop that dies while serving, ends the process
with a non-zero status so that a supervisor restarts it: every request in flight is failed first
(the engine does that as it dies). With `restart_engine` the server instead builds a new engine in
place and answers 503 "loading" meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hearth.server.admission import Admission, AdmissionLimits
from hearth.server.errors import APIError
from hearth.server.metrics import ServerMetrics

from hearth import AsyncLLM

log = logging.getLogger("hearth")


@dataclass
class ServerConfig:
    """What the server needs besides the engine."""

    model_name: str
    api_keys: tuple[str, ...] = ()
    max_queued_seqs: int | None = None      # sequences (prompts x n) waiting beyond max_num_seqs
    max_queued_tokens: int | None = None    # prompt tokens of all requests in flight
    max_prompts_per_request: int = 2048
    max_body_bytes: int = 1 << 20
    body_timeout: float = 30.0              # seconds for a request body to arrive whole
    tokenizer_threads: int = 2
    restart_engine: bool = False
    access_log: bool = True
    ready_message: str | None = None        # logged once the model is loaded


@dataclass
class LiveRequest:
    """A generation request in flight: what shutdown needs to cut it short."""

    engine_request_ids: list[str]
    cut: bool = False


@dataclass
class ServerState:
    config: ServerConfig
    engine: AsyncLLM | None = None
    load_error: BaseException | None = None
    shutting_down: bool = False             # draining: new requests get 503
    stopping: bool = False                  # the engine is being shut down on purpose
    exit_status: int | None = None          # set when the process must end (engine dead, load failed)
    num_restarts: int = 0
    num_cut: int = 0
    live: dict[int, LiveRequest] = field(default_factory=dict)
    metrics: ServerMetrics = field(init=False)
    admission: Admission | None = None
    pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(lambda: self.engine.get_stats() if self.engine is not None else None)
        self.pool = ThreadPoolExecutor(max(1, self.config.tokenizer_threads), thread_name_prefix="hearth-tokenize")

    @property
    def in_flight(self) -> int:
        return len(self.live)

    def ready_engine(self) -> AsyncLLM:
        """The engine, or the 503 that says why there is none to use."""
        if self.shutting_down:
            raise APIError(503, "the server is shutting down", code="shutting_down", headers={"Retry-After": "5"})
        if self.engine is None:
            if self.load_error is not None:
                raise APIError(503, f"the model failed to load: {str(self.load_error)[:300]}", code="engine_dead")
            raise APIError(503, "the model is still loading", code="loading", headers={"Retry-After": "1"})
        if not self.engine.is_healthy:
            raise APIError(503, f"the engine has stopped: {self.engine.dead_error}", code="engine_dead",
                           headers={"Retry-After": "5"})
        return self.engine

    def admission_for(self, engine: AsyncLLM) -> Admission:
        if self.admission is None:
            queued = self.config.max_queued_seqs
            seqs = None if queued is None else engine.config.scheduler.max_num_seqs + queued
            self.admission = Admission(AdmissionLimits(seqs, self.config.max_queued_tokens))
        return self.admission

    async def run_tokenizer(self, fn: Callable, *args):
        """Run tokenizing / template rendering on the bounded worker pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def cut_all(self) -> int:
        """Shutdown's deadline: end every request in flight now (each answers 503 or an error
        event); the number cut."""
        engine, cut = self.engine, 0
        for live in list(self.live.values()):
            if not live.cut:
                live.cut, cut = True, cut + 1
                for rid in live.engine_request_ids:
                    if engine is not None:
                        await engine.abort(rid)
        self.num_cut += cut
        return cut

    async def supervise(self, load_engine: Callable[[], AsyncLLM]) -> None:
        """Load the engine, then watch it: on its death exit non-zero, or rebuild it."""
        while True:
            try:
                self.engine = await asyncio.to_thread(load_engine)
            except asyncio.CancelledError:  # the server stopped while the model loaded
                raise
            except BaseException as exc:
                self.load_error = exc
                log.error("the model failed to load: %s", exc, exc_info=exc)
                self.exit_status = 1
                return
            if self.config.ready_message:
                log.info(self.config.ready_message)
            while self.engine.is_healthy:
                await asyncio.sleep(0.1)
            if self.stopping:  # shut down on purpose
                return
            log.error("the engine stopped: %s", self.engine.dead_error)
            if not self.config.restart_engine:
                log.error("exiting with status 1 so that a supervisor restarts the server "
                          "(--restart-engine rebuilds the engine in place instead)")
                self.exit_status = 1
                return
            dead, self.engine = self.engine, None
            await asyncio.to_thread(dead.shutdown, 1.0)
            self.num_restarts += 1
            log.warning("restarting the engine (restart %d)", self.num_restarts)
