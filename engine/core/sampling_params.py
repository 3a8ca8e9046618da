"""SamplingParams: how to pick tokens and when to stop, validated at construction."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any

_MAX_LOGPROBS = 20


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name} {msg}")


@dataclass
class SamplingParams:
    """Sampling and stopping parameters of one request (vLLM's names and meanings).

    temperature 0 is greedy decoding. `stop` strings are matched on the detokenized text and
    are not included in the output; `stop_token_ids` end generation like EOS. `logprobs=k`
    returns, for each generated token, its log-prob and the top-k; `prompt_logprobs=k` does the
    same for each prompt token (the first prompt position is None). `logit_bias` adds a value
    to the logits of given token ids before sampling (OpenAI's meaning). `n` samples several
    completions of one prompt; with `seed` set the whole result is reproducible.
    """

    n: int = 1
    max_tokens: int | None = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None
    # filled by the engine: EOS ids of the model, tracked separately from user stop ids
    _eos_token_ids: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = _as_list(self.stop, "stop")
        self.stop_token_ids = _as_list(self.stop_token_ids, "stop_token_ids")
        if self.top_k is None or self.top_k == -1:  # vLLM spells "disabled" as -1 too
            self.top_k = 0
        self.validate()

    def validate(self) -> None:
        """Check every field (ValueError whose first word names the field). Runs at
        construction; the engine runs it again on params that may have been changed since."""
        _check(isinstance(self.stop, list), "stop", f"must be a list of strings, got {_short(self.stop)}")
        _check(isinstance(self.stop_token_ids, list), "stop_token_ids",
               f"must be a list of token ids, got {_short(self.stop_token_ids)}")
        _check(_is_int(self.n) and self.n >= 1, "n", f"must be an integer >= 1, got {_short(self.n)}")
        _check(self.max_tokens is None or (_is_int(self.max_tokens) and self.max_tokens >= 1),
               "max_tokens", f"must be an integer >= 1 or None, got {_short(self.max_tokens)}")
        _check(_is_int(self.min_tokens) and self.min_tokens >= 0, "min_tokens",
               f"must be an integer >= 0, got {_short(self.min_tokens)}")
        if self.max_tokens is not None:
            _check(self.min_tokens <= self.max_tokens, "min_tokens",
                   f"({_short(self.min_tokens)}) must not exceed max_tokens ({_short(self.max_tokens)})")
        _check(_is_num(self.temperature) and self.temperature >= 0, "temperature",
               f"must be a number >= 0, got {_short(self.temperature)}")
        _check(_is_int(self.top_k) and self.top_k >= 0, "top_k",
               f"must be an integer >= 0 (0 or -1 disables it), got {_short(self.top_k)}")
        _check(_is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {_short(self.top_p)}")
        _check(_is_num(self.min_p) and 0 <= self.min_p <= 1, "min_p", f"must be in [0, 1], got {_short(self.min_p)}")
        _check(_is_num(self.repetition_penalty) and self.repetition_penalty > 0, "repetition_penalty",
               f"must be a number > 0, got {_short(self.repetition_penalty)}")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            _check(_is_num(v) and -2 <= v <= 2, name, f"must be in [-2, 2], got {_short(v)}")
        _check(self.seed is None or _is_int(self.seed), "seed", f"must be an integer or None, got {_short(self.seed)}")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop",
               f"must be non-empty strings, got {_short(self.stop)}")
        _check(all(_is_int(t) and t >= 0 for t in self.stop_token_ids), "stop_token_ids",
               f"must be non-negative integers, got {_short(self.stop_token_ids)}")
        for name in ("logprobs", "prompt_logprobs"):
            v = getattr(self, name)
            _check(v is None or (_is_int(v) and 0 <= v <= _MAX_LOGPROBS), name,
                   f"must be an integer in [0, {_MAX_LOGPROBS}] or None, got {_short(v)}")
        if self.logit_bias is not None:
            _check(isinstance(self.logit_bias, dict) and all(
                _is_int(k) and k >= 0 and _is_num(v) and -100 <= v <= 100 for k, v in self.logit_bias.items()),
                "logit_bias", f"must map token ids (integers >= 0) to numbers in [-100, 100], "
                f"got {_short(self.logit_bias)}")
        for name in ("ignore_eos", "include_stop_str_in_output", "skip_special_tokens"):
            _check(isinstance(getattr(self, name), bool), name, "must be a bool")

    @property
    def is_greedy(self) -> bool:
        """Temperature 0 or top_k 1: the argmax, no randomness."""
        return self.temperature == 0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        """Anything that changes logits before sampling: penalties or a logit bias."""
        return (self.repetition_penalty != 1.0 or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0 or bool(self.logit_bias))

    def clone(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed."""
        return replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    """A real number the sampler can use as a float: not NaN, and not an int too large for a
    float (float() of 10**400 raises OverflowError; infinities are allowed)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return abs(v) <= _MAX_FLOAT_INT
    return v == v


_MAX_FLOAT_INT = int(sys.float_info.max)


def _as_list(value: Any, name: str) -> list:
    """None -> [], a list or tuple -> a list; anything else (an int, a dict ...) is a ValueError
    rather than a TypeError from list()."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list, got {_short(value)}")
    return list(value)


def _short(value: Any, limit: int = 200) -> str:
    """repr for an error message, cut so a huge value cannot make a huge message."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python converts to text
        return f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."
