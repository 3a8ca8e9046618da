"""Building OpenAI response bodies (whole and streamed) from engine outputs."""

from __future__ import annotations

import json
from typing import Any

from hearth import CompletionOutput, Logprob


class ChoiceState:
    """One choice of a response (prompt i, sample j): what has been generated so far."""

    def __init__(self, index: int, prepared: dict, kind: str, num_logprobs: int | None, echo: bool) -> None:
        self.index, self.prepared, self.kind = index, prepared, kind
        self.num_logprobs, self.echo = num_logprobs, echo
        self.text, self.num_tokens = "", 0
        self.token_logprobs: list[dict[str, Any]] = []   # one entry per generated token
        self.finish_reason: str | None = None

    @property
    def prompt_text(self) -> str:
        return self.prepared["prompt"] or ""

    def first_chunk(self) -> dict | None:
        """The chunk a stream opens with: the assistant role (chat) or the echoed prompt."""
        if self.kind == "chat":
            return {"delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        if self.echo:
            return {"text": self.prompt_text, "logprobs": None, "finish_reason": None}
        return None

    def add(self, c: CompletionOutput) -> dict | None:
        """Fold in one delta; the streaming payload for it (None when there is nothing new)."""
        new_lps = [self._token_logprob(tid, pos) for tid, pos in zip(c.token_ids, c.logprobs or [])]
        self.text += c.text
        self.num_tokens += len(c.token_ids)
        self.token_logprobs += new_lps
        self.finish_reason = _finish(c.finish_reason) or self.finish_reason
        if not (c.text or c.token_ids or c.finish_reason):
            return None
        if self.kind == "chat":
            return {"delta": {"content": c.text} if c.text else {},
                    "logprobs": {"content": new_lps} if self.num_logprobs is not None else None,
                    "finish_reason": _finish(c.finish_reason)}
        return {"text": c.text, "logprobs": _legacy_logprobs(new_lps) if self.num_logprobs is not None else None,
                "finish_reason": _finish(c.finish_reason)}

    def _token_logprob(self, token_id: int, position: dict[int, Logprob]) -> dict[str, Any]:
        chosen = position[token_id]
        top = sorted((lp for lp in position.values() if lp.rank <= (self.num_logprobs or 0)), key=lambda lp: lp.rank)
        token = chosen.decoded_token or ""
        return {"token": token, "logprob": _finite(chosen.logprob), "bytes": list(token.encode()),
                "top_logprobs": [{"token": lp.decoded_token or "", "logprob": _finite(lp.logprob),
                                  "bytes": list((lp.decoded_token or "").encode())} for lp in top]}


def _finite(x: float) -> float:
    return max(x, -9999.0)  # JSON has no -inf


def _finish(reason: str | None) -> str | None:
    return None if reason is None else ("stop" if reason == "abort" else reason)


def _legacy_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    """The completions route's log-prob shape: parallel lists."""
    offsets, pos = [], offset
    for e in entries:
        offsets.append(pos)
        pos += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def usage(choices: list[ChoiceState], n: int) -> dict[str, int]:
    """Prompt tokens count once per prompt, completion tokens once per choice."""
    prompt = sum(len(ch.prepared["prompt_token_ids"]) for ch in choices[::n])
    completion = sum(ch.num_tokens for ch in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chunk_object(kind: str) -> str:
    return "text_completion" if kind == "completion" else "chat.completion.chunk"


class ChunkEncoder:
    """Server-sent events for one streamed response. A chunk is the same JSON object each
    time apart from its choice payload, so everything around the payload is encoded once per
    choice index: this runs once per token per stream, the hottest path of the server."""

    def __init__(self, meta: dict, kind: str) -> None:
        head = json.dumps({**meta, "object": chunk_object(kind)}, separators=(",", ":"))
        self._head = "data: " + head[:-1] + ',"choices":[{"index":'
        self._prefixes: dict[int, str] = {}

    def chunk(self, index: int, payload: dict) -> bytes:
        """`data: {...meta, "choices": [{"index": index, **payload}]}` and the blank line."""
        prefix = self._prefixes.get(index)
        if prefix is None:
            prefix = self._prefixes[index] = f"{self._head}{index},"
        body = json.dumps(payload, separators=(",", ":"))
        return f"{prefix}{body[1:]}]}}\n\n".encode()


def sse_event(payload: dict) -> bytes:
    """Any other event (usage, error): one `data:` line and the blank line."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def completion_response(meta: dict, choices: list[ChoiceState], n: int) -> dict:
    out = []
    for ch in choices:
        prefix = ch.prompt_text if ch.echo else ""
        lps = None
        if ch.num_logprobs is not None:
            lps = _legacy_logprobs(ch.token_logprobs, offset=len(prefix))
        out.append({"index": ch.index, "text": prefix + ch.text, "logprobs": lps, "finish_reason": ch.finish_reason})
    return {**meta, "object": "text_completion", "choices": out, "usage": usage(choices, n)}


def chat_response(meta: dict, choices: list[ChoiceState], n: int) -> dict:
    out = [{"index": ch.index, "message": {"role": "assistant", "content": ch.text},
            "logprobs": {"content": ch.token_logprobs} if ch.num_logprobs is not None else None,
            "finish_reason": ch.finish_reason} for ch in choices]
    return {**meta, "object": "chat.completion", "choices": out, "usage": usage(choices, n)}
