"""The OpenAPI document, with the bounds only the loaded model knows.

The request schemas are static, but token ids must be below the vocabulary size and output
lengths within the context: once the engine is up, those maxima are written into the document
(so a schema-driven client or fuzzer generates only what the server accepts)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from hearth.server.state import ServerState


def _bound_ids(schema: dict[str, Any] | None, vocab: int) -> None:
    """Give every integer (token id) under `schema` the maximum vocab - 1."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "integer":
        schema["maximum"] = vocab - 1
    for key in ("items", "anyOf", "oneOf"):
        sub = schema.get(key)
        for s in sub if isinstance(sub, list) else [sub]:
            _bound_ids(s, vocab)


def below(n: int) -> str:
    """A regular expression matching the decimal integers 0 .. n-1 exactly (no leading zeros)."""
    top = str(n - 1)
    alternatives = ["0"] if n >= 1 else []
    for width in range(1, len(top)):  # every number shorter than n - 1
        alternatives.append("[1-9]" + (f"[0-9]{{{width - 1}}}" if width > 1 else ""))
    for i, digit in enumerate(top):  # as long as n - 1: a prefix of it, then one smaller digit
        d = int(digit)
        low = 1 if i == 0 else 0
        if d > low:
            rest = len(top) - i - 1
            alternatives.append(top[:i] + f"[{low}-{d - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    if top != "0":
        alternatives.append(top)
    return "^(" + "|".join(dict.fromkeys(alternatives)) + ")$"


def _alternatives(schema: dict[str, Any] | None, kind: str) -> list[dict[str, Any]]:
    """The alternatives of type `kind` of a field schema (itself, or members of its anyOf)."""
    schema = schema or {}
    return [s for s in schema.get("anyOf", [schema]) if s.get("type") == kind]


def _bound_bias_keys(schema: dict[str, Any] | None, vocab: int) -> None:
    """Keys of the logit_bias object: token ids below the vocabulary size, written as strings."""
    for s in _alternatives(schema, "object"):
        values = next(iter(s.pop("patternProperties", {}).values()), {})
        s["propertyNames"] = {"pattern": below(vocab)}
        s["additionalProperties"] = values


def _set_max(schema: dict[str, Any] | None, kind: str, key: str, value: int) -> None:
    """Set `key` on the `kind` alternatives of a (possibly anyOf) field schema."""
    for s in _alternatives(schema, kind):
        s[key] = min(value, s.get(key, value))


def install_openapi(app: FastAPI, state: ServerState) -> None:
    """Serve /openapi.json with the model's bounds (computed once the engine is loaded)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        engine = state.engine
        if engine is None:  # not loaded yet: the static document, not cached
            return doc
        vocab, context = engine.config.model.vocab_size, engine.config.scheduler.max_model_len
        schemas = doc.get("components", {}).get("schemas", {})
        for name, fields in (("CompletionRequest", ("prompt", "stop_token_ids")),
                             ("ChatCompletionRequest", ("stop_token_ids",)),
                             ("DetokenizeRequest", ("tokens",))):
            props = schemas.get(name, {}).get("properties", {})
            for field in fields:
                _bound_ids(props.get(field), vocab)
            _bound_bias_keys(props.get("logit_bias"), vocab)
            _set_max(props.get("max_tokens"), "integer", "maximum", context)
            _set_max(props.get("max_completion_tokens"), "integer", "maximum", context)
            # the engine runs a request's n samples side by side: n cannot exceed max_num_seqs
            _set_max(props.get("n"), "integer", "maximum", min(128, engine.config.scheduler.max_num_seqs))
            if name == "CompletionRequest":
                _set_max(props.get("prompt"), "array", "maxItems", state.config.max_prompts_per_request)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
