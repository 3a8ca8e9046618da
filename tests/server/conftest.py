"""A real `hearth serve` process on 127.0.0.1 over the tiny random model, for the server tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx
import pytest

API_KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    model: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout)


def start_server(model_dir, *extra: str, env: dict | None = None) -> Server:
    """Start `hearth serve` and wait until /health says ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "hearth", "serve", str(model_dir), "--port", str(port),
           "--served-model-name", "tiny", "--api-key", API_KEY, "--max-model-len", "256",
           "--kv-cache-memory", str(64 << 20), *extra]
    proc = subprocess.Popen(cmd, cwd=tempfile.gettempdir(),
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, "tiny")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stdout.read().decode()}")
        try:
            if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("server did not become ready in 60 s")


@pytest.fixture(scope="session")
def server(tiny_model_dir):
    srv = start_server(tiny_model_dir, "--max-num-seqs", "32", "--max-queued-seqs", "512")
    yield srv
    srv.stop()
