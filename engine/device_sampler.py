"""Sampling next to the logits on the GPU, for the CUDA backend.

The logits of a step stay in GPU memory. Requests whose parameters the GPU sampler
(kernels.numba.sampling) covers are sampled there, and only their token ids come back (plus
log-probs when asked for): one small copy per step instead of [rows, vocab] floats. A request that
needs the host sampler's extras (repetition/frequency/presence penalties, a logit bias, EOS banned
until min_tokens) has just its own row copied back and sampled on the host.

The GPU draw is a hash of (request seed, step), so a request's tokens do not depend on its batch
neighbours; seeded sampling is reproducible on the GPU, but gives other tokens than the CPU
backend's numpy generator for the same seed. Greedy decoding is the same argmax on both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.request import Request
from engine.sampler import Sampler, TokenLogprobs, banned_ids
from kernels.numba.sampling import sample


def runs_on_device(req: Request) -> bool:
    """Whether the GPU sampler covers everything this request's next token needs."""
    sp = req.sampling_params
    return not sp.has_penalties and not banned_ids(req, sp)


def sampling_arrays(reqs: list[Request]) -> dict[str, np.ndarray]:
    """The per-request parameter vectors the GPU sampler takes, built on the host."""
    sps = [r.sampling_params for r in reqs]
    return {
        "temperature": np.array([0.0 if sp.is_greedy else sp.temperature for sp in sps], np.float32),
        "top_k": np.array([sp.top_k for sp in sps], np.int32),
        "top_p": np.array([sp.top_p for sp in sps], np.float32),
        "min_p": np.array([sp.min_p for sp in sps], np.float32),
        "seeds": np.array([r.sample_seed for r in reqs], np.int64),
        "steps": np.array([len(r.output_token_ids) for r in reqs], np.int64),
    }


class DeviceSampler:
    """Samples rows of a device logits matrix; `device` is the backend's CupyDevice (or stand-in)."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def sample(self, logits: Any, rows: list[int], reqs: list[Request], host_sampler: Sampler,
               ) -> tuple[list[int], list[TokenLogprobs | None]]:
        """Next token (and log-probs when asked) of reqs[i] from row rows[i] of logits [L, V] fp32."""
        tokens: list[int] = [0] * len(reqs)
        logprobs: list[TokenLogprobs | None] = [None] * len(reqs)
        on_device = [runs_on_device(r) for r in reqs]
        for where, fn in ((True, self._sample_on_device), (False, self._sample_on_host)):
            picked = [i for i, d in enumerate(on_device) if d == where]
            if picked:
                sub_tokens, sub_lps = fn(self._rows(logits, [rows[i] for i in picked]),
                                         [reqs[i] for i in picked], host_sampler)
                for i, t, lp in zip(picked, sub_tokens, sub_lps):
                    tokens[i], logprobs[i] = t, lp
        return tokens, logprobs

    def _rows(self, logits: Any, rows: list[int]) -> Any:
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return logits[rows[0]:rows[0] + len(rows)]  # a view: decode steps take every row in order
        return logits[self.device.asarray(np.asarray(rows, np.int64))]

    def _sample_on_host(self, logits: Any, reqs: list[Request], host_sampler: Sampler):
        return host_sampler.sample(np.asarray(self.device.to_host(logits), np.float32), reqs)

    def _sample_on_device(self, logits: Any, reqs: list[Request], host_sampler: Sampler):
        dev = self.device
        args = {k: dev.for_numba(dev.asarray(v)) for k, v in sampling_arrays(reqs).items()}
        wants = [r.sampling_params.logprobs for r in reqs]
        num_logprobs = max((k or 0 for k in wants), default=0)
        out = sample(dev.for_numba(logits), **args, num_logprobs=num_logprobs, threads=dev.sampler_threads)
        tokens = np.asarray(dev.to_host(out.token_ids)).tolist()
        if all(k is None for k in wants):
            return tokens, [None] * len(reqs)
        lp, ranks = np.asarray(dev.to_host(out.logprobs)), np.asarray(dev.to_host(out.ranks))
        top_ids, top_lps = np.asarray(dev.to_host(out.top_ids)), np.asarray(dev.to_host(out.top_logprobs))
        result = []
        for i, k in enumerate(wants):
            result.append(None if k is None else TokenLogprobs(
                tokens[i], float(lp[i]), int(ranks[i]), top_ids[i, :k].astype(np.int64),
                top_lps[i, :k].astype(np.float64)))
        return tokens, result
