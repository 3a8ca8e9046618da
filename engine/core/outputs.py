"""The contracts that cross components: what the scheduler hands the model runner, and what the
engine hands its caller (vLLM's RequestOutput shape)."""

from __future__ import annotations

from dataclasses import dataclass, field

# ---------------------------------------------------------------- caller-facing


class RequestError(RuntimeError):
    """One request failed inside the engine (its sampling, stop check or output handling
    raised); the engine and every other request carry on. The message names the request."""



@dataclass(frozen=True)
class Logprob:
    """Log-probability of one token at one position; rank 1 is the most likely token."""

    logprob: float
    rank: int
    decoded_token: str | None = None


# per position: token id -> Logprob (the chosen or prompt token, plus the top-k)
PositionLogprobs = dict[int, Logprob]


@dataclass
class CompletionOutput:
    """One completion of a prompt (there are `n` of them)."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[PositionLogprobs] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort" | None while running
    stop_reason: int | str | None = None  # the stop string or token id that ended it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class RequestMetrics:
    """When the request arrived and when the scheduler first gave it tokens (time.monotonic)."""

    arrival_time: float
    first_scheduled_time: float | None = None

    @property
    def queue_time(self) -> float | None:
        """Seconds spent waiting before the first step that computed any of its tokens."""
        return None if self.first_scheduled_time is None else self.first_scheduled_time - self.arrival_time


@dataclass
class RequestOutput:
    """The result (or, when streaming, a delta) of one request."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[PositionLogprobs | None] | None
    outputs: list[CompletionOutput]
    finished: bool = False
    metrics: RequestMetrics | None = None

    def merge(self, later: RequestOutput) -> None:
        """Fold the next delta of the same request into this one, as if both had been sent as
        one: texts, token ids and log-probs are concatenated; finish state comes from `later`.
        (A consumer that falls behind receives one merged delta instead of several.)"""
        if later.prompt_logprobs:
            self.prompt_logprobs = (self.prompt_logprobs or []) + later.prompt_logprobs
        mine = {c.index: c for c in self.outputs}
        for c in later.outputs:
            old = mine.get(c.index)
            if old is None:
                self.outputs.append(c)
                continue
            old.text += c.text
            old.token_ids = old.token_ids + c.token_ids
            if c.logprobs is not None:
                old.logprobs = (old.logprobs or []) + c.logprobs
            old.cumulative_logprob, old.finish_reason, old.stop_reason = (
                c.cumulative_logprob, c.finish_reason, c.stop_reason)
        self.finished, self.metrics = later.finished, later.metrics


# ---------------------------------------------------------------- engine-internal


@dataclass
class ScheduledRequest:
    """One request's share of a step: tokens [start, start + num_tokens) of its sequence."""

    request_id: str
    start: int
    num_tokens: int
    block_ids: list[int]
    # True when this chunk reaches the end of the known tokens, so a new token is sampled
    samples: bool
    # True when the logits of every prompt position in this chunk are wanted (prompt_logprobs)
    wants_prompt_logits: bool = False


@dataclass
class SchedulerOutput:
    """What one engine step computes, in batch order."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled
