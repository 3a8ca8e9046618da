"""From engine-core step events to RequestOutputs: detokenize incrementally, apply stop
strings, gather log-probs, and join the n samples of one prompt."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hearth.engine.core.engine_core import StepEvent
from hearth.engine.core.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestMetrics, RequestOutput
from hearth.engine.core.sampler import TokenLogprobs
from hearth.engine.core.sampling_params import SamplingParams
from hearth.engine.tokenization.detokenizer import IncrementalDetokenizer
from hearth.engine.tokenization.tokenizer import Tokenizer


def to_position_logprobs(lp: TokenLogprobs, decode) -> PositionLogprobs:
    """vLLM's shape: the chosen token first, then the top-k (rank 1 = most likely)."""
    out = {lp.token_id: Logprob(lp.logprob, lp.rank, decode(lp.token_id))}
    for rank, (tid, val) in enumerate(zip(lp.top_ids.tolist(), lp.top_logprobs.tolist()), start=1):
        if tid not in out:
            out[tid] = Logprob(float(val), rank, decode(tid))
    return out


@dataclass
class _Sample:
    """The growing state of one of the n completions."""

    index: int
    detok: IncrementalDetokenizer
    params: SamplingParams
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    sent_text: int = 0  # characters / tokens already streamed
    sent_tokens: int = 0
    sent_logprobs: int = 0
    stop_checked: int = 0  # text before this offset holds no stop string

    def visible_text_end(self) -> int:
        """While running, hold back a tail that could still become a stop string."""
        if self.finish_reason is not None or not self.params.stop:
            return len(self.text)
        hold = max(len(s) for s in self.params.stop) - 1
        return max(self.sent_text, len(self.text) - hold)


class RequestState:
    """One user request: the prompt and its n samples."""

    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int],
                 params: SamplingParams, tokenizer: Tokenizer) -> None:
        self.request_id, self.prompt, self.prompt_token_ids = request_id, prompt, prompt_token_ids
        self.params = params
        self.tokenizer = tokenizer
        self.prompt_logprobs: list[PositionLogprobs | None] | None = (
            [None] if params.prompt_logprobs is not None else None)
        self.sent_prompt_logprobs = 0
        self.error: Exception | None = None  # set when handling this request's output failed
        self.arrival_time = time.monotonic()
        self.first_scheduled_time: float | None = None
        self.samples = [
            _Sample(i, IncrementalDetokenizer(tokenizer, skip_special_tokens=params.skip_special_tokens),
                    params, logprobs=[] if params.logprobs is not None else None,
                    cumulative_logprob=0.0 if params.logprobs is not None else None)
            for i in range(params.n)]

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)

    @property
    def unsent_tokens(self) -> int:
        """Generated tokens not yet in any delta (the most over the n samples)."""
        return max(len(s.token_ids) - s.sent_tokens for s in self.samples)

    @property
    def started_streaming(self) -> bool:
        """True once a delta carrying a token has been built."""
        return any(s.sent_tokens for s in self.samples)

    def mark_aborted(self) -> None:
        """Finish every unfinished sample with finish_reason "abort"."""
        for s in self.samples:
            if s.finish_reason is None:
                s.text += s.detok.flush()
                s.finish_reason = "abort"

    def _decode_one(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def apply(self, index: int, ev: StepEvent) -> bool:
        """Fold one step event of sample `index` in; True when a stop string ended it (the
        caller must then abort that sample in the engine core)."""
        if self.first_scheduled_time is None:
            self.first_scheduled_time = ev.first_scheduled_time
        if ev.new_prompt_logprobs and self.prompt_logprobs is not None:
            self.prompt_logprobs.extend(to_position_logprobs(lp, self._decode_one) for lp in ev.new_prompt_logprobs)
        s = self.samples[index]
        if s.finish_reason is not None:
            return False
        for lp in ev.new_logprobs:
            s.logprobs.append(to_position_logprobs(lp, self._decode_one))
            s.cumulative_logprob += lp.logprob
        hit_stop = False
        for tok in ev.new_token_ids:
            s.token_ids.append(tok)
            is_eos = ev.finish_reason == "stop" and ev.stop_reason is None and tok == ev.new_token_ids[-1]
            if not (is_eos and self.params.skip_special_tokens):
                s.text += s.detok.add(tok)
            hit_stop = self._check_stop_strings(s)
            if hit_stop:
                break
        if ev.finish_reason is not None and not hit_stop:
            s.text += s.detok.flush()
            s.finish_reason, s.stop_reason = ev.finish_reason, ev.stop_reason
            self._check_stop_strings(s)
        return hit_stop

    def _check_stop_strings(self, s: _Sample) -> bool:
        if not s.params.stop or s.finish_reason == "stop":
            return False
        longest = max(len(x) for x in s.params.stop)
        window_start = max(0, s.stop_checked - longest + 1)
        s.stop_checked = len(s.text)
        best = None
        for stop in s.params.stop:
            at = s.text.find(stop, window_start)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
        if best is None:
            return False
        at, stop = best
        s.text = s.text[:at + len(stop)] if s.params.include_stop_str_in_output else s.text[:at]
        s.finish_reason, s.stop_reason = "stop", stop
        return True

    def output(self, delta: bool) -> RequestOutput:
        """The whole result so far, or (delta=True) only what was not sent before."""
        outs = []
        for s in self.samples:
            end = s.visible_text_end()
            if delta:
                lp = s.logprobs[s.sent_logprobs:] if s.logprobs is not None else None
                outs.append(CompletionOutput(s.index, s.text[s.sent_text:end], s.token_ids[s.sent_tokens:],
                                             lp, s.cumulative_logprob, s.finish_reason, s.stop_reason))
                s.sent_text, s.sent_tokens = end, len(s.token_ids)
                s.sent_logprobs = len(s.logprobs) if s.logprobs is not None else 0
            else:
                outs.append(CompletionOutput(s.index, s.text[:end], list(s.token_ids), s.logprobs,
                                             s.cumulative_logprob, s.finish_reason, s.stop_reason))
        plp = self.prompt_logprobs
        if delta and plp is not None:
            plp, self.sent_prompt_logprobs = plp[self.sent_prompt_logprobs:], len(plp)
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids, plp, outs, self.finished,
                             RequestMetrics(self.arrival_time, self.first_scheduled_time))
