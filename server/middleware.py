"""ASGI middleware in front of every route: the request body's limits and checks, and the access log.

`RequestBody` reads a POST body once, under a size limit (413) and a read deadline (408), treats
it as JSON whatever content-type the client declared, and rejects text that cannot be encoded
(lone UTF-16 surrogates, "\\ud800", which the tokenizer and the JSON encoder both choke on) with
a 400 naming where it is; then it replays the body to the app. `AccessLog` writes one line per
request once its response has ended (streams included) and gives every response an
`x-request-id`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse
from hearth.server.errors import error_body

access_log = logging.getLogger("hearth.access")

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._:-]")


def find_lone_surrogate(value: Any, path: str = "") -> str | None:
    """The JSON path of the first string (or key) holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            found = find_lone_surrogate(k, where) or find_lone_surrogate(v, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = find_lone_surrogate(v, f"{path}[{i}]")
            if found:
                return found
    return None


class RequestBody:
    """Body limits for POST/PUT/PATCH; see the module docstring."""

    def __init__(self, app, max_bytes: int, read_timeout: float) -> None:
        self.app, self.max_bytes, self.read_timeout = app, max_bytes, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _reject(send, 413, f"request body over {self.max_bytes} bytes")
        chunks, size = [], 0
        deadline = time.monotonic() + self.read_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return await _reject(send, 408, f"the request body did not arrive within {self.read_timeout:g} s")
            if message["type"] != "http.request":  # the client left while sending
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reject(send, 413, f"request body over {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _ESCAPED_SURROGATE.search(body):
            where = _surrogate_in(body)
            if where is not None:
                return await _reject(send, 400, f"{where} holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                                                "which is not valid Unicode text", param=where)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and not (ctype == b"application/json" or ctype.endswith(b"+json")):
            # parse it as JSON anyway (curl -d sends form encoding by default)
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                     + [(b"content-type", b"application/json")]}
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect as usual

        await self.app(scope, replay, send)


def _surrogate_in(body: bytes) -> str | None:
    try:
        return find_lone_surrogate(json.loads(body))
    except ValueError:  # not JSON: the route's parser says so
        return None


async def _reject(send, status: int, message: str, param: str | None = None) -> None:
    headers = {"connection": "close"} if status in (408, 413) else None
    response = JSONResponse(error_body(status, message, param), status_code=status, headers=headers)
    await response({"type": "http"}, None, send)


def request_log(scope) -> dict[str, Any]:
    """What a route adds to its access-log line (key_id, tokens_in, tokens_out)."""
    return scope.setdefault("hearth.log", {})


class AccessLog:
    """One line per request: time, method, path, status, duration, request id, key id (a
    fingerprint, never the key), prompt and completion tokens."""

    def __init__(self, app, enabled: bool = True) -> None:
        self.app, self.enabled = app, enabled

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = _SAFE_ID.sub("", given)[:64] or uuid.uuid4().hex
        fields = request_log(scope)
        fields["request_id"] = request_id
        start, status = time.monotonic(), [0]

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if self.enabled:
                self._write(scope, status[0] or 499, time.monotonic() - start, fields)

    @staticmethod
    def _write(scope, status: int, seconds: float, fields: dict[str, Any]) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        path = scope.get("path", "")[:200]
        access_log.info("%s %s %s %d %.3fs id=%s key=%s in=%s out=%s", now, scope.get("method", "-"), path,
                        status, seconds, fields.get("request_id", "-"), fields.get("key_id", "-"),
                        fields.get("tokens_in", "-"), fields.get("tokens_out", "-"))
