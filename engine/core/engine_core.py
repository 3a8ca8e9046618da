"""EngineCore: one synchronous step = schedule -> run the model -> sample -> update."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hearth.engine.model.config import EngineConfig
from hearth.engine.core.kv_cache import KVCacheManager
from hearth.engine.backend.runner import ModelRunner
from hearth.engine.core.outputs import SchedulerOutput
from hearth.engine.core.request import Request
from hearth.engine.core.sampler import SampleFailure, Sampler, TokenLogprobs, gather_logprobs
from hearth.engine.core.sampling_params import SamplingParams
from hearth.engine.core.scheduler import Scheduler


@dataclass
class StepEvent:
    """What happened to one request in one step."""

    request_id: str
    new_token_ids: list[int] = field(default_factory=list)
    new_logprobs: list[TokenLogprobs] = field(default_factory=list)
    new_prompt_logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None  # "error": handling this request raised, `error` says what
    stop_reason: int | str | None = None
    first_scheduled_time: float | None = None
    error: str | None = None


@dataclass
class _InFlight:
    """A step whose forward pass and sampling are queued (on the GPU, possibly still running)."""

    sched: SchedulerOutput
    logits: dict  # request id -> RequestLogits
    todo: list[str]  # ids of the requests that sample, in the order of the pending tokens
    pending: Any  # the runner's handle for their tokens (None: nothing samples)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's gauges and counters (counters count since start-up)."""

    num_running: int
    num_waiting: int
    num_kv_blocks: int
    kv_cache_usage: float          # fraction of blocks held by requests
    prefix_cache_queries: int      # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int         # of those, tokens found cached
    num_preemptions: int
    num_prompt_tokens: int         # prompt tokens of requests added
    num_generation_tokens: int     # tokens sampled


class EngineCore:
    """Owns the scheduler, the KV cache, the model runner and the sampler."""

    def __init__(self, config: EngineConfig, runner: ModelRunner) -> None:
        self.config = config
        self.runner = runner
        self.kv_cache = KVCacheManager(config.cache.num_blocks, config.cache.block_size,
                                       config.cache.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler, self.kv_cache)
        self.sampler = Sampler(config.seed)
        # seeds for the GPU sampler's counter-based draws of unseeded requests (a stream of its
        # own, so the CPU sampler's draws do not depend on how many requests arrived)
        self._seed_rng = np.random.default_rng(None if config.seed is None else [config.seed, 0x5EED])
        self._arrivals = 0
        self._in_flight: _InFlight | None = None  # a launched step not yet completed (async runners)
        self._num_prompt_tokens = 0
        self._num_generation_tokens = 0

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    wants_prompt_logprobs: bool | None = None) -> None:
        """Queue a request whose prompt and parameters have already been validated against the
        model (EngineFrontend.tokenize). Prompt ids are checked again here: the model would read
        a bad one for every request in the batch, not just this one."""
        vocab = self.config.model.vocab_size
        if not len(prompt_token_ids) or min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab:
            raise ValueError(f"prompt token ids must be a non-empty list of integers in [0, {vocab})")
        if wants_prompt_logprobs is None:
            wants_prompt_logprobs = params.prompt_logprobs is not None
        # any integer seeds (OpenAI allows negative ones): fold it into numpy's unsigned range
        generator = np.random.default_rng(params.seed % 2**64) if params.seed is not None else None
        req = Request(request_id=request_id, prompt_token_ids=list(prompt_token_ids),
                      sampling_params=params, arrival_order=self._arrivals,
                      max_total_tokens=self.config.scheduler.max_model_len, generator=generator,
                      wants_prompt_logprobs=wants_prompt_logprobs,
                      sample_seed=(params.seed % 2**63 if params.seed is not None
                                   else int(self._seed_rng.integers(2**63))))
        self.scheduler.add(req)
        self._arrivals += 1
        self._num_prompt_tokens += len(req.prompt_token_ids)

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its KV blocks; False if it was unknown or finished."""
        req = self.scheduler.abort(request_id)
        self.scheduler.forget(request_id)
        return req is not None

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished or self._in_flight is not None

    @property
    def has_work(self) -> bool:
        """A step would advance something (unfinished requests that are all paused do not count)."""
        return self._in_flight is not None or self.scheduler.has_schedulable

    def pause(self, request_id: str, paused: bool = True) -> None:
        """Hold (or with paused=False resume) a request without freeing its KV blocks."""
        self.scheduler.pause(request_id, paused)

    def stats(self) -> EngineStats:
        """Gauges and counters for logs and metrics."""
        kv = self.kv_cache
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            num_kv_blocks=kv.pool.num_blocks, kv_cache_usage=kv.usage,
            prefix_cache_queries=kv.stats.queries, prefix_cache_hits=kv.stats.hits,
            num_preemptions=self.scheduler.num_preemptions, num_prompt_tokens=self._num_prompt_tokens,
            num_generation_tokens=self._num_generation_tokens)

    def step(self) -> list[StepEvent]:
        """Advance every schedulable request by one step; events for those that changed.

        With an asynchronous runner (the GPU) the step is pipelined: this call completes the step
        launched by the previous call (waits for its tokens, updates the requests), launches the
        next one, and returns the completed step's events, so the caller's output handling
        (detokenizing, streaming) runs while the GPU computes."""
        if not self.runner.is_async:
            launched = self._launch()
            return self._complete(launched) if launched is not None else []
        events = self._complete(self._in_flight) if self._in_flight is not None else []
        self._in_flight = self._launch()
        return events

    def _launch(self) -> _InFlight | None:
        """Schedule a step and queue its forward pass and sampling."""
        sched = self.scheduler.schedule()
        if sched.is_empty:
            return None
        requests = self.scheduler.requests
        logits = self.runner.execute(sched, requests)
        todo = [s.request_id for s in sched.scheduled if s.samples]
        pending = None
        if todo:
            rows = [logits[rid].sample_index for rid in todo]
            pending = self.runner.sample_launch(self.sampler, rows, [requests[rid] for rid in todo])
        return _InFlight(sched, logits, todo, pending)

    def _complete(self, step: _InFlight) -> list[StepEvent]:
        """Collect a launched step's tokens and advance its requests (those aborted since the
        launch are skipped: their results are dropped)."""
        sched, requests = step.sched, self.scheduler.requests
        tokens, lps = self.runner.sample_collect(step.pending) if step.pending is not None else ([], [])
        alive = [s for s in sched.scheduled if s.request_id in requests and not requests[s.request_id].is_finished]
        events = {s.request_id: StepEvent(s.request_id, first_scheduled_time=requests[s.request_id].first_scheduled_time)
                  for s in alive}
        failed = self._prompt_logprobs(alive, step.logits, requests, events)
        sampled = {}
        for rid, tok, lp in zip(step.todo, tokens, lps):
            if rid not in events or rid in failed:
                continue
            if isinstance(tok, SampleFailure):
                failed[rid] = tok.message
                continue
            sampled[rid] = tok
            events[rid].new_token_ids.append(tok)
            if lp is not None:
                events[rid].new_logprobs.append(lp)
        self._num_generation_tokens += len(sampled)
        # a request whose own handling raised is finished (blocks freed, as by abort) before the
        # update, which skips it; the others advance as if it had not been there
        finished = [req for req in (self.scheduler.fail(rid, msg) for rid, msg in failed.items()) if req]
        for req in finished + self.scheduler.update(sched, sampled):
            ev = events[req.request_id]
            ev.finish_reason, ev.stop_reason, ev.error = req.status.value, req.stop_reason, req.error
            self.scheduler.forget(req.request_id)
        return [ev for ev in events.values()
                if ev.new_token_ids or ev.new_prompt_logprobs or ev.finish_reason]

    def _prompt_logprobs(self, scheduled, logits, requests, events) -> dict[str, str]:
        """Fill in the events' prompt log-probs; {request id: error} of those where that raised."""
        failed = {}
        for s in scheduled:
            rows = logits[s.request_id].prompt_rows
            if rows is None:
                continue
            try:
                self._request_prompt_logprobs(s, rows, requests[s.request_id], events)
            except Exception as exc:  # this request's parameters broke it: it alone fails
                failed[s.request_id] = f"prompt logprobs failed: {exc!r}"
        return failed

    @staticmethod
    def _request_prompt_logprobs(s, rows, req: Request, events) -> None:
        # row j predicts prompt token s.start + j + 1; skip positions reported before a
        # preemption made us recompute them
        first_new = max(0, req.num_prompt_logprobs_done - s.start)
        if first_new >= len(rows):
            return
        targets = np.asarray(req.prompt_token_ids[s.start + 1 + first_new:s.start + 1 + len(rows)])
        k = req.sampling_params.prompt_logprobs or 0
        events[s.request_id].new_prompt_logprobs = gather_logprobs(rows[first_new:], targets, k)
        req.num_prompt_logprobs_done = s.start + len(rows)
