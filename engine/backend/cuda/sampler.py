"""Sampling next to the logits on the GPU, for the CUDA backend.

The logits of a step stay in GPU memory. Requests whose parameters the GPU sampler
(hearth.kernels.numba.sampling) covers are sampled there, and only their token ids come back (plus
log-probs when asked for): one small copy per step instead of [rows, vocab] floats. A request that
needs the host sampler's extras (repetition/frequency/presence penalties, a logit bias, EOS banned
until min_tokens) has just its own row copied back and sampled on the host.

The GPU draw is a hash of (request seed, step), so a request's tokens do not depend on its batch
neighbours; seeded sampling is reproducible on the GPU, but gives other tokens than the CPU
backend's numpy generator for the same seed. Greedy decoding is the same argmax on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hearth.engine.core.request import Request
from hearth.engine.core.sampler import Sampler, TokenLogprobs, banned_ids
from hearth.kernels.numba.sampling import sample


_F32_MAX = float(np.finfo(np.float32).max)
_I32_MAX = int(np.iinfo(np.int32).max)


def runs_on_device(req: Request) -> bool:
    """Whether the GPU sampler covers everything this request's next token needs."""
    sp = req.sampling_params
    return not sp.has_penalties and not banned_ids(req, sp)


def sampling_arrays(reqs: list[Request]) -> dict[str, np.ndarray]:
    """The per-request parameter vectors the GPU sampler takes, built on the host."""
    sps = [r.sampling_params for r in reqs]
    # any valid value must fit the kernel's dtypes: a top_k past the vocabulary means no limit,
    # a temperature past float32's range is as flat as its largest (an overflow here would fail the step)
    temps = np.array([0.0 if sp.is_greedy else float(sp.temperature) for sp in sps], np.float64)
    return {
        "temperature": np.minimum(temps, _F32_MAX).astype(np.float32),
        "top_k": np.array([min(sp.top_k, _I32_MAX) for sp in sps], np.int32),
        "top_p": np.array([sp.top_p for sp in sps], np.float32),
        "min_p": np.array([sp.min_p for sp in sps], np.float32),
        "seeds": np.array([r.sample_seed for r in reqs], np.int64),
        "steps": np.array([len(r.output_token_ids) for r in reqs], np.int64),
    }


class _ParamBuffers:
    """Page-locked host staging and device buffers for the parameter vectors of up to `rows`
    requests: a step fills the host side and queues three asynchronous copies, no allocation."""

    def __init__(self, device: Any, rows: int) -> None:
        self.rows = rows
        self.host_f32, self.dev_f32 = device.pinned((3, rows), "float32"), device.zeros((3, rows), "float32")
        self.host_i32, self.dev_i32 = device.pinned((rows,), "int32"), device.zeros((rows,), "int32")
        self.host_i64, self.dev_i64 = device.pinned((2, rows), "int64"), device.zeros((2, rows), "int64")

    def upload(self, device: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """The step's vectors as device views (valid until the next upload)."""
        n = len(arrays["seeds"])
        f32, i64 = ("temperature", "top_p", "min_p"), ("seeds", "steps")
        for i, name in enumerate(f32):
            self.host_f32[i, :n] = arrays[name]
        for i, name in enumerate(i64):
            self.host_i64[i, :n] = arrays[name]
        self.host_i32[:n] = arrays["top_k"]
        for i in range(3):
            device.copy_into(self.dev_f32[i, :n], self.host_f32[i, :n])
        for i in range(2):
            device.copy_into(self.dev_i64[i, :n], self.host_i64[i, :n])
        device.copy_into(self.dev_i32[:n], self.host_i32[:n])
        views = {name: self.dev_f32[i, :n] for i, name in enumerate(f32)}
        views |= {name: self.dev_i64[i, :n] for i, name in enumerate(i64)}
        views["top_k"] = self.dev_i32[:n]
        return views


@dataclass
class _Pending:
    """A launched sampling: device outputs for some requests, host rows for the others."""

    num_reqs: int
    on_device: list[int]
    device_reqs: list[Request]
    out: Any  # SampleOutput of the GPU kernel (None when no request runs on the device)
    on_host: list[int]
    host_reqs: list[Request]
    host_rows: list[int]
    logits: Any
    host_sampler: Sampler


class DeviceSampler:
    """Samples rows of a device logits matrix; `device` is the backend's CupyDevice (or stand-in)."""

    def __init__(self, device: Any, max_rows: int = 256) -> None:
        self.device = device
        self._params = _ParamBuffers(device, max_rows)

    def launch(self, logits: Any, rows: list[int], reqs: list[Request], host_sampler: Sampler) -> _Pending:
        """Queue the GPU sampling of the requests it covers (nothing waits for the device); the
        rest are sampled on the host by `collect`. logits [L, V] fp32; reqs[i] samples row rows[i]."""
        on_device = [i for i, r in enumerate(reqs) if runs_on_device(r)]
        on_host = [i for i, r in enumerate(reqs) if not runs_on_device(r)]
        out = None
        if on_device:
            out = self._launch_kernel(self._rows(logits, [rows[i] for i in on_device]), [reqs[i] for i in on_device])
        return _Pending(len(reqs), on_device, [reqs[i] for i in on_device], out, on_host,
                        [reqs[i] for i in on_host], [rows[i] for i in on_host], logits, host_sampler)

    def collect(self, p: _Pending) -> tuple[list[int], list[TokenLogprobs | None]]:
        """Wait for the tokens of a launch (one small download) and sample the host rows."""
        tokens: list[int] = [0] * p.num_reqs
        logprobs: list[TokenLogprobs | None] = [None] * p.num_reqs
        parts = []
        if p.on_device:
            parts.append((p.on_device, *self._download(p.out, p.device_reqs)))
        if p.on_host:
            host_rows = np.asarray(self.device.to_host(self._rows(p.logits, p.host_rows)), np.float32)
            parts.append((p.on_host, *p.host_sampler.sample(host_rows, p.host_reqs)))
        for picked, sub_tokens, sub_lps in parts:
            for i, t, lp in zip(picked, sub_tokens, sub_lps):
                tokens[i], logprobs[i] = t, lp
        return tokens, logprobs

    def _rows(self, logits: Any, rows: list[int]) -> Any:
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return logits[rows[0]:rows[0] + len(rows)]  # a view: decode steps take every row in order
        return logits[self.device.asarray(np.asarray(rows, np.int64))]

    def _launch_kernel(self, logits: Any, reqs: list[Request]) -> Any:
        dev = self.device
        if len(reqs) > self._params.rows:  # more rows than the engine schedules: grow once
            self._params = _ParamBuffers(dev, len(reqs))
        args = {k: dev.for_numba(v) for k, v in self._params.upload(dev, sampling_arrays(reqs)).items()}
        num_logprobs = max((r.sampling_params.logprobs or 0 for r in reqs), default=0)
        return sample(dev.for_numba(logits), **args, num_logprobs=num_logprobs, threads=dev.sampler_threads)

    def _download(self, out: Any, reqs: list[Request]) -> tuple[list[int], list[TokenLogprobs | None]]:
        dev = self.device
        tokens = np.asarray(dev.to_host(out.token_ids)).tolist()
        wants = [r.sampling_params.logprobs for r in reqs]
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
