"""Token-budget scheduler: no prefill or decode phases.

Every request has `num_computed_tokens` catching up to `num_tokens`. A step grants tokens under
`max_num_batched_tokens`, running requests first (oldest first), then waiting ones; so chunked
prefill, decode and recompute after preemption are one mechanism. When the KV pool runs dry the
newest running request is preempted: its blocks are freed and it goes back to the front of the
waiting queue, to be recomputed later. A request admitted from the queue starts after the
longest prefix of its tokens already in the prefix cache. Imports no array library."""

from __future__ import annotations

import time
from collections import deque

from hearth.engine.model.config import SchedulerConfig
from hearth.engine.core.kv_cache import KVCacheManager
from hearth.engine.core.outputs import ScheduledRequest, SchedulerOutput
from hearth.engine.core.request import Request, RequestStatus


class Scheduler:
    """Decides which tokens of which requests one engine step computes."""

    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager) -> None:
        self.config = config
        self.kv_cache = kv_cache
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    # ------------------------------------------------------------ queue management

    def add(self, request: Request) -> None:
        """Queue a new request; it must fit the whole cache on its own."""
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        if not self.kv_cache.can_fit(request.max_total_tokens):
            raise ValueError(
                f"request {request.request_id!r} may grow to {request.max_total_tokens} tokens, "
                "more than the whole KV cache holds")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def abort(self, request_id: str) -> Request | None:
        """Finish a request at once as aborted and free its blocks; None if unknown/finished."""
        return self._finish(request_id, RequestStatus.FINISHED_ABORTED)

    def fail(self, request_id: str, error: str) -> Request | None:
        """Finish a request at once as failed (`error` says why) and free its blocks, as abort
        does; None if unknown/finished."""
        return self._finish(request_id, RequestStatus.FINISHED_ERROR, error)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def has_schedulable(self) -> bool:
        """Some unfinished request is not paused: a step would do work."""
        return any(not r.is_paused for r in self.running) or any(not r.is_paused for r in self.waiting)

    def pause(self, request_id: str, paused: bool = True) -> None:
        """Hold a request (its reader has fallen behind): it keeps its KV blocks and its place,
        but steps grant it nothing until it is resumed (`paused=False`). Unknown ids are ignored."""
        req = self.requests.get(request_id)
        if req is not None:
            req.is_paused = paused

    # ------------------------------------------------------------ one step

    def schedule(self) -> SchedulerOutput:
        """Grant tokens for one step under the token budget and the KV pool."""
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            if req.is_paused:
                i += 1
                continue
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            if not self._allocate_or_preempt(req, n, out):
                break  # req itself was preempted: everything after it is gone too
            out.scheduled.append(self._grant(req, n))
            budget -= n
            i += 1
        while (self.waiting and budget > 0 and not out.preempted_ids
               and len(self.running) < self.config.max_num_seqs):
            req = self.waiting[0] if not self.waiting[0].is_paused else next(
                (r for r in self.waiting if not r.is_paused), None)
            if req is None:
                break
            # prompt log-probs need the logits of every prompt position: no skipping for those
            cached = [] if req.wants_prompt_logprobs else self.kv_cache.find_cached_prefix(req)
            num_cached = len(cached) * self.kv_cache.block_size
            n = min(req.num_tokens - num_cached, budget)
            if not self.kv_cache.allocate(req, num_cached + n, cached):
                break
            self.kv_cache.stats.record(req.num_tokens, num_cached)
            req.num_computed_tokens = num_cached
            self.waiting.remove(req)
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            out.scheduled.append(self._grant(req, n))
            budget -= n
        return out

    def update(self, sched: SchedulerOutput, sampled: dict[str, int]) -> list[Request]:
        """Advance each scheduled request; append the sampled tokens; return the requests
        that finished in this step (their blocks are already freed)."""
        finished = []
        for s in sched.scheduled:
            req = self.requests.get(s.request_id)
            if req is None or req.is_finished:
                continue
            req.num_computed_tokens = s.start + s.num_tokens
            if s.samples:
                try:
                    req.append_token(sampled[s.request_id])
                    stopped = req.check_stop()
                except Exception as exc:  # a broken stop condition fails this request, not the step
                    req.status, req.error = RequestStatus.FINISHED_ERROR, f"stop check failed: {exc!r}"
                    stopped = True
                if stopped:
                    self._retire(req)
                    finished.append(req)
        return finished

    def forget(self, request_id: str) -> None:
        """Drop a finished request's record once its output has been delivered."""
        req = self.requests.get(request_id)
        if req is not None and req.is_finished:
            del self.requests[request_id]

    # ------------------------------------------------------------ helpers

    def _grant(self, req: Request, n: int) -> ScheduledRequest:
        if req.first_scheduled_time is None:
            req.first_scheduled_time = time.monotonic()
        start = req.num_computed_tokens
        return ScheduledRequest(
            request_id=req.request_id, start=start, num_tokens=n,
            block_ids=self.kv_cache.block_ids(req.request_id),
            samples=start + n == req.num_tokens,
            wants_prompt_logits=req.wants_prompt_logprobs and start < req.num_prompt_tokens)

    def _allocate_or_preempt(self, req: Request, n: int, out: SchedulerOutput) -> bool:
        """Make room for n more tokens of `req`, preempting the newest running requests;
        False when `req` itself had to be preempted."""
        while not self.kv_cache.allocate(req, req.num_computed_tokens + n):
            victim = self.running.pop()
            self._preempt(victim)
            out.preempted_ids.append(victim.request_id)
            if victim is req:
                return False
        return True

    def _preempt(self, req: Request) -> None:
        self.num_preemptions += 1
        self.kv_cache.free(req.request_id)
        req.num_computed_tokens = 0
        req.status = RequestStatus.WAITING
        self.waiting.appendleft(req)

    def _finish(self, request_id: str, status: RequestStatus, error: str | None = None) -> Request | None:
        req = self.requests.get(request_id)
        if req is None or req.is_finished:
            return None
        req.status, req.error = status, error
        self._retire(req)
        return req

    def _retire(self, req: Request) -> None:
        self.kv_cache.forget(req.request_id)
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
