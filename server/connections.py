"""Connection-level limits that uvicorn does not enforce by itself.

uvicorn closes a kept-alive connection that stays idle after a response, but a connection that
never sends a request, or sends its headers a byte at a time, or stops reading a stream, stays
open for ever. `guarded_protocol` returns a subclass of uvicorn's HTTP protocol that adds:

- a header timeout: from the moment a connection opens (or a kept-alive one starts its next
  request) its request headers must arrive whole within `header_timeout` seconds;
- a write timeout and a bounded send buffer: the transport's buffer holds at most
  `send_buffer_bytes`; when it stays full for `write_timeout` seconds (the client stopped
  reading) the connection is aborted, which the app sees as a disconnect (the stream's request
  is aborted and its KV blocks freed);
- a cap on open connections: one over `max_connections` gets a JSON 503 and is closed.

Body read timeouts live in the ASGI middleware (server/middleware.py), which can answer 408."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    """Timeouts in seconds, sizes in bytes; see the module docstring."""

    header_timeout: float = 10.0
    write_timeout: float = 30.0
    send_buffer_bytes: int = 256 << 10
    max_connections: int = 1024


def _busy_response() -> bytes:
    body = json.dumps({"error": {"message": "too many open connections; retry shortly",
                                 "type": "service_unavailable", "param": None, "code": "too_many_connections"}})
    return (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}").encode()


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with `limits` applied (pass it as uvicorn.Config(http=...))."""

    class GuardedProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(_busy_response())
                transport.close()
                return
            # the low mark at a quarter: resume once most of the buffer has drained
            transport.set_write_buffer_limits(high=limits.send_buffer_bytes, low=limits.send_buffer_bytes // 4)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # a fixed kernel buffer too: autotuned, it grows to megabytes per client
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.send_buffer_bytes)
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().on_headers_complete()

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(limits.write_timeout, self._abort)

        def resume_writing(self) -> None:
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None
            super().resume_writing()

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout, self._abort)

        def _cancel_timers(self) -> None:
            for timer in (self._header_timer, self._write_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._write_timer = None

        def _abort(self) -> None:
            # abort, not close: close would wait for a buffer the client never reads
            self._cancel_timers()
            self.transport.abort()  # a no-op on a transport that is already gone

    return GuardedProtocol
