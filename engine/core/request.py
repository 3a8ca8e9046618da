"""A request as the engine core tracks it: its tokens and how far the KV cache has caught up."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from hearth.engine.core.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    FINISHED_ERROR = "error"  # handling this request raised; `Request.error` says what

    @property
    def is_finished(self) -> bool:
        return self in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH,
                        RequestStatus.FINISHED_ABORTED, RequestStatus.FINISHED_ERROR)


@dataclass
class Request:
    """One sequence being generated. `num_computed_tokens` counts tokens whose K/V are cached;
    it catches up to `num_tokens` (prompt + output) step by step, which covers chunked prefill,
    decode and recompute after preemption with one mechanism."""

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_order: int
    max_total_tokens: int  # prompt + output may not exceed this (max_model_len)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: RequestStatus = RequestStatus.WAITING
    stop_reason: int | str | None = None
    error: str | None = None  # why it failed (status FINISHED_ERROR)
    is_paused: bool = False   # its reader lags: keep its blocks, schedule nothing for it
    # sampler state: a numpy Generator when the request has a seed (opaque to this module)
    generator: Any = None
    # the seed of the GPU sampler's draws (hash of seed and step): the request's own seed, or one
    # the engine drew for it
    sample_seed: int = 0
    wants_prompt_logprobs: bool = False
    num_prompt_logprobs_done: int = 0  # prompt positions already reported (survives preemption)
    first_scheduled_time: float | None = None  # time.monotonic() of the first step that ran it

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_slice(self, start: int, stop: int) -> list[int]:
        """Tokens [start, stop) of prompt + output without building the whole list."""
        n = self.num_prompt_tokens
        if stop <= n:
            return self.prompt_token_ids[start:stop]
        if start >= n:
            return self.output_token_ids[start - n:stop - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[:stop - n]

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    def append_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)

    def check_stop(self) -> bool:
        """After a token is appended: finish on EOS / stop ids / max_tokens / max_model_len."""
        sp = self.sampling_params
        last = self.output_token_ids[-1]
        num_out = len(self.output_token_ids)
        if num_out >= sp.min_tokens:
            if not sp.ignore_eos and last in sp._eos_token_ids:
                self.status, self.stop_reason = RequestStatus.FINISHED_STOPPED, None
                return True
            if last in sp.stop_token_ids:
                self.status, self.stop_reason = RequestStatus.FINISHED_STOPPED, last
                return True
        if (sp.max_tokens is not None and num_out >= sp.max_tokens) or self.num_tokens >= self.max_total_tokens:
            self.status = RequestStatus.FINISHED_LENGTH
            return True
        return False
