"""The worker supervisor: one `hearth serve` process per deployment, kept alive.

Each deployment runs in its own process (its own engine and GIL) on a loopback port, speaking
the same HTTP API the endpoint relays, behind a key only the endpoint knows. The supervisor
starts it, polls its /health (loading -> ready), notices when it dies (failed) and starts it
again after a back-off that doubles on each quick death (0.5 s up to 30 s, reset once a worker
has stayed ready for a minute), and stops it with SIGTERM so that it drains its requests.
`on_change(name, state)` tells the router which deployments can take traffic. A fault in one
worker never reaches another: they share nothing but the supervisor."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hearth.server.endpoint.spec import DeploymentSpec

log = logging.getLogger("hearth")

FIRST_BACKOFF_S, MAX_BACKOFF_S, STABLE_AFTER_S = 0.5, 30.0, 60.0
_FLAGS = {"device": "--device", "dtype": "--dtype", "quantization": "--quantization",
          "max_model_len": "--max-model-len", "kv_cache_memory": "--kv-cache-memory",
          "num_kv_blocks": "--num-kv-blocks", "block_size": "--block-size", "max_num_seqs": "--max-num-seqs",
          "max_num_batched_tokens": "--max-num-batched-tokens", "seed": "--seed",
          "stream_interval": "--stream-interval"}


def worker_command(spec: DeploymentSpec, served_name: str, port: int, key: str) -> list[str]:
    """The `hearth serve` command line of one deployment's worker."""
    cmd = [sys.executable, "-m", "hearth", "serve", *([spec.model] if spec.model else []),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name, "--api-key", key]
    for name, flag in _FLAGS.items():
        value = getattr(spec, name)
        if value is not None:
            cmd += [flag, str(value)]
    if not spec.enable_prefix_caching:
        cmd.append("--no-prefix-caching")
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Worker:
    """One deployment's process and what the supervisor knows of it."""

    name: str
    spec: DeploymentSpec
    served_name: str
    state: str = "stopped"          # loading | ready | failed | draining | stopped
    port: int = 0
    process: subprocess.Popen | None = None
    restarts: int = 0
    backoff: float = FIRST_BACKOFF_S
    ready_since: float | None = None
    restart_at: float | None = None
    last_exit: int | None = None
    wanted: bool = True             # False once it is being removed: do not restart it
    log_path: Path | None = None
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Supervisor:
    """Starts, watches, restarts and stops the workers of an endpoint."""

    def __init__(self, log_dir: str | Path, on_change: Callable[[str, str], None] | None = None) -> None:
        self.key = secrets.token_urlsafe(24)  # only the endpoint talks to its workers
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers: dict[str, Worker] = {}
        self.on_change = on_change or (lambda name, state: None)
        self._client = httpx.AsyncClient(timeout=2.0)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def add(self, name: str, spec: DeploymentSpec, served_name: str) -> Worker:
        """Start a worker for a deployment (it reports ready once its model has loaded)."""
        if name in self.workers:
            raise ValueError(f"deployment {name!r} already has a worker")
        worker = self.workers[name] = Worker(name, spec, served_name, log_path=self.log_dir / f"{name}.log")
        self._spawn(worker)
        return worker

    async def watch(self, interval: float = 0.1) -> None:
        """Run until cancelled: poll health, notice deaths, restart with back-off."""
        while True:
            for worker in list(self.workers.values()):
                await self._check(worker)
            await asyncio.sleep(interval)

    async def remove(self, name: str, drain_timeout: float = 30.0) -> int | None:
        """Stop a deployment's worker (SIGTERM: it finishes its requests first); its exit status."""
        worker = self.workers.get(name)
        if worker is None:
            return None
        worker.wanted = False
        self._set(worker, "draining")
        status = await asyncio.to_thread(self._terminate, worker, drain_timeout)
        self._set(worker, "stopped")
        del self.workers[name]
        return status

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Stop every worker (in parallel) and the health client."""
        await asyncio.gather(*(self.remove(name, drain_timeout) for name in list(self.workers)))
        await self._client.aclose()

    # ------------------------------------------------------------------ internals

    def _spawn(self, worker: Worker) -> None:
        worker.port = _free_port()
        if worker._log is None:
            worker._log = open(worker.log_path, "ab")  # noqa: SIM115 (open for the worker's life; a file, not a pipe nobody reads)
        worker.process = subprocess.Popen(worker_command(worker.spec, worker.served_name, worker.port, self.key),
                                          stdout=worker._log, stderr=subprocess.STDOUT, cwd=self.log_dir)
        worker.restart_at = None
        self._set(worker, "loading")

    async def _check(self, worker: Worker) -> None:
        now = time.monotonic()
        proc = worker.process
        if worker.state in ("loading", "ready") and proc is not None and proc.poll() is not None:
            worker.last_exit = proc.returncode
            if worker.ready_since is not None and now - worker.ready_since >= STABLE_AFTER_S:
                worker.backoff = FIRST_BACKOFF_S  # it had been fine for a while: start over
            worker.restart_at = now + worker.backoff
            log.error("deployment %r: worker %s exited with status %s; restarting in %.1f s", worker.name,
                      proc.pid, proc.returncode, worker.backoff)
            worker.backoff = min(MAX_BACKOFF_S, worker.backoff * 2)
            self._set(worker, "failed")
        elif worker.state == "failed" and worker.wanted and worker.restart_at is not None and now >= worker.restart_at:
            worker.restarts += 1
            self._spawn(worker)
        elif worker.state == "loading" and await self._healthy(worker):
            worker.ready_since = now
            self._set(worker, "ready")

    async def _healthy(self, worker: Worker) -> bool:
        try:
            return (await self._client.get(worker.url + "/health")).status_code == 200
        except httpx.HTTPError:
            return False

    def _set(self, worker: Worker, state: str) -> None:
        if worker.state != state:
            worker.state = state
            if state != "ready":
                worker.ready_since = None
            self.on_change(worker.name, state)

    @staticmethod
    def _terminate(worker: Worker, timeout: float) -> int | None:
        proc = worker.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if worker._log is not None:
            worker._log.close()
        return proc.returncode
