"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the right status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("hearth")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "internal_server_error", 503: "service_unavailable"}


class APIError(Exception):
    """An error to send to the client as-is."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


MAX_MESSAGE_CHARS = 1000


def clip(value: Any, limit: int = 200) -> str:
    """repr() of a client's value for an error message, cut to about `limit` characters: an error
    names what is wrong without echoing a huge input back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object; messages (and param names) are capped so no error echoes a whole input."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    if param is not None and len(param) > 200:
        param = param[:200] + "..."
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), status_code=err.status,
                        headers=err.headers)


_TYPE_NAMES = ("str", "int", "float", "bool", "dict", "list", "none")


def _is_member_tag(part: str) -> bool:
    """pydantic's name for a union member in an error location ("constrained-str",
    "list[int]", "function-before[...]", "TokenizePrompt"), not a field name."""
    return any(c in part for c in "[]-") or part in _TYPE_NAMES or (part[:1].isupper() and part.isidentifier())


def _field_path(loc) -> list[str]:
    """The field path of an error location, without the union member tags."""
    return [p for p in (str(x) for x in loc if x != "body") if not _is_member_tag(p)]


def _member(loc) -> str | None:
    """The union member an error belongs to, if any."""
    return next((p for p in (str(x) for x in loc if x != "body") if _is_member_tag(p)), None)


def _most_telling(errors: list[dict]) -> dict:
    """A union reports the errors of every member; those of the member that came closest (the
    fewest errors) and among them one about a value rather than a type ("at least 1 item", not
    "should be a valid string") say what is wrong."""
    head = _field_path(errors[0].get("loc", ()))[:1]
    top = [str(p) for p in errors[0].get("loc", ()) if p != "body"][:1]
    body_is_union = bool(top) and _member(top) == top[0]  # e.g. /tokenize: prompt or messages
    same_field = errors if body_is_union else [e for e in errors if _field_path(e.get("loc", ()))[:1] == head]
    by_member: dict[str | None, list[dict]] = {}
    for e in same_field:
        by_member.setdefault(_member(e.get("loc", ())), []).append(e)
    def is_type(e: dict) -> bool:
        return str(e.get("type", "")).endswith("_type")

    closest = min(by_member.values(), key=lambda group: (len(group), all(map(is_type, group))))
    telling = [e for e in closest if not is_type(e)]
    return telling[0] if telling else closest[0]


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable line (and the offending parameter) from pydantic's error list."""
    first = _most_telling(exc.errors())
    param = ".".join(_field_path(first.get("loc", ()))) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = str(first.get("ctx", {}).get("error", first.get("msg")))
        return f"malformed JSON body ({detail}); send a JSON object with content-type: application/json", None
    if kind == "extra_forbidden":
        return f"unknown or unsupported parameter {clip(param)}", param
    if kind == "missing":
        return f"missing required parameter {clip(param)}", param
    msg = first.get("msg", "invalid value")
    return (f"invalid value for {clip(param)}: {str(msg)[:300]}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app can raise becomes an OpenAI-shaped JSON response."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        message, param = validation_message(exc)
        return JSONResponse(error_body(400, message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}"),
                            status_code=500)
