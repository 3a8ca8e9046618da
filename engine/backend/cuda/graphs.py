"""Decode steps as CUDA graphs: one graph per batch-size bucket, captured at start-up, replayed with
the step's inputs copied into fixed buffers.

A decode step (one new token per sequence) is a fixed sequence of kernel launches whose only
variable is the batch size, so a batch of n sequences is padded up to the nearest captured size
and that graph is replayed: one launch instead of hundreds, which is most of the step time of a
small model. Padding rows are inert: slot -1 (no KV write), seq_len 0 (attention gives 0),
token 0 at position 0; their logits are never read. The block-table width is fixed at
max_model_len / block_size so one graph serves every context length.

Prefill and mixed steps run eagerly. Without a real GPU (the interpreter stand-in of the tests)
nothing is captured and `run` executes the same padded forward eagerly, which keeps the padding
logic under test in CI.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hearth.engine.model.llama import ForwardBatch
from hearth.engine.backend.runner import StepInputs

log = logging.getLogger("hearth")

MAX_GRAPH_BATCH = 512  # above this a step is long enough that a launch per kernel costs little


def graph_batch_sizes(max_num_seqs: int, limit: int = MAX_GRAPH_BATCH) -> list[int]:
    """Batch sizes to capture: 1, 2, 4, 8, then every multiple of 8, up to max_num_seqs (itself
    included) or `limit`. Multiples of 8 keep padding waste under 8 rows per step."""
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
    top = min(max_num_seqs, limit)
    sizes = [s for s in (1, 2, 4) if s < top] + list(range(8, top + 1, 8))
    if not sizes or sizes[-1] != top:
        sizes.append(top)
    return sizes


def choose_bucket(num_seqs: int, sizes: list[int]) -> int | None:
    """The smallest captured size that holds `num_seqs` rows, or None (run eagerly)."""
    for s in sizes:
        if s >= num_seqs:
            return s
    return None


@dataclass
class _Graph:
    graph: Any  # the captured CUDA graph (None under the interpreter)
    logits: Any  # [bucket, V] fp32, written by every replay


class DecodeGraphs:
    """Fixed input buffers, one captured graph per batch size, and the replay of a decode step."""

    def __init__(self, device: Any, model: Any, kv_caches: list, sizes: list[int], max_blocks: int) -> None:
        self.device, self.model, self.kv_caches = device, model, kv_caches
        self.sizes, self.max_blocks = sizes, max_blocks
        rows = sizes[-1]
        # host staging (page-locked) and device buffers: ids, positions, slots as one int64 block;
        # seq_lens then block tables as one int32 block (each view below stays contiguous)
        self.host64 = device.pinned((3, rows), "int64")
        self.host32 = device.pinned((rows + rows * max_blocks,), "int32")
        self.dev64 = device.zeros((3, rows), "int64")
        self.dev32 = device.zeros((rows + rows * max_blocks,), "int32")
        self.query_start_loc = device.asarray(np.arange(rows + 1, dtype=np.int32))
        self.logits_indices = device.asarray(np.arange(rows, dtype=np.int64))
        self.host32[:] = 0
        self._pad(0, rows)
        device.copy_into(self.dev64, self.host64)  # captures run on padding rows
        device.copy_into(self.dev32, self.host32)
        self.graphs: dict[int, _Graph] = {}

    def batch(self, size: int) -> ForwardBatch:
        """The ForwardBatch of `size` rows over the fixed buffers."""
        d32, rows = self.dev32, self.sizes[-1]
        return ForwardBatch(
            token_ids=self.dev64[0, :size], positions=self.dev64[1, :size], slot_mapping=self.dev64[2, :size],
            block_tables=d32[rows:rows + size * self.max_blocks].reshape(size, self.max_blocks),
            seq_lens=d32[:size], query_start_loc=self.query_start_loc[:size + 1],
            logits_indices=self.logits_indices[:size], decode_only=True)

    def capture(self) -> float:
        """Capture every size, largest first (smaller graphs then reuse its scratch memory in
        the graph pool); returns the seconds it took."""
        t0 = time.perf_counter()
        if not self.device.is_real:
            return 0.0
        for size in reversed(self.sizes):
            with self.device.graph_allocations():
                self.model.forward(self.batch(size), self.kv_caches)  # compile, load, fill the pool
                self.device.synchronize()
                holder = {}
                graph = self.device.capture(
                    lambda s=size: holder.update(logits=self.model.forward(self.batch(s), self.kv_caches)))
            self.graphs[size] = _Graph(graph, holder["logits"])
        self.device.synchronize()
        return time.perf_counter() - t0

    def can_run(self, inputs: StepInputs) -> bool:
        """A decode step whose every row samples: the shape the graphs were captured for."""
        n = len(inputs.seq_lens)
        return (inputs.decode_only and choose_bucket(n, self.sizes) is not None
                and len(inputs.logits_indices) == n
                and int(inputs.block_tables.shape[1]) <= self.max_blocks)

    def run(self, inputs: StepInputs) -> Any:
        """Copy the step's inputs into the fixed buffers and replay; logits [n, V] fp32 (a view
        into the graph's output, valid until the next step)."""
        n = len(inputs.seq_lens)
        size = choose_bucket(n, self.sizes)
        rows, width = self.sizes[-1], inputs.block_tables.shape[1]
        self._pad(n, size)
        self.host64[0, :n], self.host64[1, :n], self.host64[2, :n] = (
            inputs.token_ids, inputs.positions, inputs.slot_mapping)
        self.host32[:n] = inputs.seq_lens
        # table entries past a row's context are never read, so only the real rows' first `width`
        # entries are written and only the real rows go up (padding rows read no blocks)
        table_rows = self.host32[rows:rows + n * self.max_blocks].reshape(n, self.max_blocks)
        table_rows[:, :width] = inputs.block_tables
        dev = self.device
        for i in range(3):  # ids, positions, slots
            dev.copy_into(self.dev64[i, :size], self.host64[i, :size])
        dev.copy_into(self.dev32[:size], self.host32[:size])
        dev.copy_into(self.dev32[rows:rows + n * self.max_blocks], self.host32[rows:rows + n * self.max_blocks])
        g = self.graphs.get(size)
        if g is None:  # interpreter stand-in: the same padded forward, eagerly
            return self.model.forward(self.batch(size), self.kv_caches)[:n]
        dev.replay(g.graph)
        return g.logits[:n]

    def _pad(self, start: int, stop: int) -> None:
        """Host staging rows [start, stop) set to padding: token 0, position 0, slot -1 (no KV
        write), seq_len 0 (attention reads no block and gives 0)."""
        self.host64[:2, start:stop] = 0
        self.host64[2, start:stop] = -1
        self.host32[start:stop] = 0
