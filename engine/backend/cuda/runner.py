"""The model runner on a GPU: KV cache sized from free memory, decode steps replayed as CUDA
graphs, logits kept on the device and sampled there.

Start-up order (hearth.engine.frontends.builder): load the weights, run the largest step the scheduler can ask for
once (`profile_used_bytes`) so CuPy's pool holds its peak, size the KV cache to what is left of
`gpu_memory_fraction` of the device (`kv_blocks_for_memory`), allocate it, then capture the decode
graphs. A step then costs one small upload of its inputs, the replay (or the eager forward of a
prefill/mixed step), the sampling kernel and one small download of the sampled token ids.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hearth.engine.backend.cuda.backend import CUDABackend
from hearth.engine.model.config import EngineConfig
from hearth.engine.backend.cuda.graphs import DecodeGraphs, graph_batch_sizes
from hearth.engine.backend.cuda.sampler import DeviceSampler
from hearth.engine.model.llama import ForwardBatch, LlamaForCausalLM
from hearth.engine.backend.runner import ModelRunner, build_step_inputs, request_logits
from hearth.engine.core.outputs import SchedulerOutput
from hearth.engine.core.request import Request
from hearth.engine.core.sampler import Sampler, TokenLogprobs
from hearth.kernels.numba.sampling import sample

log = logging.getLogger("hearth")

GiB = float(1 << 30)


def kv_blocks_for_memory(total_bytes: int, used_bytes: int, fraction: float, bytes_per_block: int) -> int:
    """KV blocks (all layers' K and V: `bytes_per_block`) that fit in `fraction` of the device's
    `total_bytes` beside the `used_bytes` already taken by weights, peak activations and the
    CUDA context. ValueError when no block fits, naming the figures."""
    if not 0 < fraction <= 1:
        raise ValueError(f"gpu_memory_fraction must be in (0, 1], got {fraction!r}")
    budget = int(total_bytes * fraction) - used_bytes
    blocks = budget // bytes_per_block if budget > 0 else 0
    if blocks < 1:
        raise ValueError(
            f"gpu_memory_fraction {fraction} of {total_bytes / GiB:.1f} GiB leaves no room for the KV "
            f"cache: weights and activations already use {used_bytes / GiB:.2f} GiB; raise "
            "gpu_memory_fraction, lower max_num_batched_tokens, or quantize the weights")
    return blocks


def profile_used_bytes(backend: CUDABackend, model: LlamaForCausalLM, num_tokens: int, num_rows: int,
                       block_size: int) -> tuple[int, int]:
    """Run one eager step of `num_tokens` prompt tokens whose last `num_rows` rows get logits and
    are sampled, over a one-block scratch cache (nothing is written to it: slots are -1); return
    (used, total) device bytes afterwards, the pool still holding the step's peak."""
    c, dev = model.config, backend.device
    scratch = [backend.kv_cache(1, block_size, c.num_key_value_heads, c.head_dim)
               for _ in range(c.num_hidden_layers)]
    num_rows = max(1, min(num_rows, num_tokens))
    batch = ForwardBatch(
        token_ids=dev.asarray(np.zeros(num_tokens, np.int64)),
        positions=dev.asarray(np.arange(num_tokens, dtype=np.int64) % int(model.cos.shape[0])),
        slot_mapping=dev.asarray(np.full(num_tokens, -1, np.int64)),
        block_tables=dev.asarray(np.zeros((1, -(-num_tokens // block_size)), np.int32)),
        seq_lens=dev.asarray(np.array([num_tokens], np.int32)),
        query_start_loc=dev.asarray(np.array([0, num_tokens], np.int32)),
        logits_indices=dev.asarray(np.arange(num_tokens - num_rows, num_tokens, dtype=np.int64)))
    logits = model.forward(batch, scratch)
    ones = lambda dtype, v: dev.for_numba(dev.asarray(np.full(num_rows, v, dtype)))  # noqa: E731
    sample(dev.for_numba(logits), ones(np.float32, 1.0), ones(np.int32, 0), ones(np.float32, 1.0),
           ones(np.float32, 0.0), ones(np.int64, 0), ones(np.int64, 0), threads=dev.sampler_threads)
    del logits, scratch, batch
    free, total = dev.memory_info()
    return total - free, total


class CUDAModelRunner(ModelRunner):
    """ModelRunner whose logits stay on the GPU; decode steps replay captured graphs."""

    def __init__(self, config: EngineConfig, backend: CUDABackend, model: LlamaForCausalLM,
                 use_cuda_graphs: bool = True) -> None:
        super().__init__(config, backend, model)  # allocates the KV cache
        self.device = backend.device
        self.device_sampler = DeviceSampler(self.device, config.scheduler.max_num_seqs)
        self.graphs: DecodeGraphs | None = None
        if use_cuda_graphs:
            max_blocks = -(-config.scheduler.max_model_len // self.block_size)
            sizes = graph_batch_sizes(config.scheduler.max_num_seqs)
            self.graphs = DecodeGraphs(self.device, model, self.kv_caches, sizes, max_blocks)
            seconds = self.graphs.capture()
            if self.device.is_real:
                log.info("CUDA graphs: captured decode batch sizes %s in %.2f s", _ranges(sizes), seconds)

    def execute(self, sched: SchedulerOutput, requests: dict[str, Request]):
        self.device.activate()  # this thread may not be the one that built the engine
        inputs = build_step_inputs(sched, requests, self.block_size)
        if self.graphs is not None and self.graphs.can_run(inputs):
            logits = self.graphs.run(inputs)
        else:
            logits = self.model.forward(self.forward_batch(inputs), self.kv_caches)
        self.last_logits = logits  # [rows, V] fp32 on the device
        to_host = self.device.to_host
        return request_logits(sched, inputs.spans,
                              lambda r0, n: np.asarray(to_host(logits[r0:r0 + n]), np.float32))

    is_async = True  # execute and sample_launch only queue GPU work; sample_collect waits

    def sample_launch(self, sampler: Sampler, rows: list[int], reqs: list[Request]) -> Any:
        return self.device_sampler.launch(self.last_logits, rows, reqs, sampler)

    def sample_collect(self, handle: Any) -> tuple[list[int], list[TokenLogprobs | None]]:
        self.device.activate()
        return self.device_sampler.collect(handle)


def _ranges(sizes: list[int]) -> str:
    return f"{sizes[0]}..{sizes[-1]} ({len(sizes)} graphs)" if len(sizes) > 3 else str(sizes)


def device_summary(device: Any) -> str:
    """'NAME, X GiB' for the start-up log."""
    free, total = device.memory_info()
    return f"{getattr(device, 'name', 'GPU')}, {total / GiB:.1f} GiB ({free / GiB:.1f} GiB free)"
