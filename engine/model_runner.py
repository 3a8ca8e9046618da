"""Turns a SchedulerOutput into the flat inputs of one forward pass, runs the model, and returns
the logits rows each request needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.backend.base import Backend
from engine.config import EngineConfig
from engine.model.llama import ForwardBatch, LlamaForCausalLM, host_logits
from engine.outputs import SchedulerOutput
from engine.request import Request


@dataclass
class RequestLogits:
    """A request's rows in the step's logits: prompt-position rows and the sampling row."""

    prompt_rows: np.ndarray | None  # [n, V]: row j predicts token start + j + 1
    sample_row: np.ndarray | None  # [V]
    sample_index: int = -1  # row of sample_row in the step's logits matrix


class ModelRunner:
    """Owns the model and its KV caches; executes one scheduled step."""

    def __init__(self, config: EngineConfig, backend: Backend, model: LlamaForCausalLM) -> None:
        self.backend = backend
        self.model = model
        self.block_size = config.cache.block_size
        self.last_logits: np.ndarray | None = None
        mc = config.model
        self.kv_caches = [backend.kv_cache(config.cache.num_blocks, self.block_size,
                                           mc.num_key_value_heads, mc.head_dim)
                          for _ in range(mc.num_hidden_layers)]

    def execute(self, sched: SchedulerOutput, requests: dict[str, Request]) -> dict[str, RequestLogits]:
        """Run the model over every scheduled token; logits of the rows requests need."""
        batch, spans = self._build_batch(sched, requests)
        logits = host_logits(self.backend, self.model.forward(batch, self.kv_caches))
        self.last_logits = logits  # [rows, V]: lets the sampler take a view instead of a copy
        result = {}
        for s, (row0, num_prompt_rows, has_sample) in zip(sched.scheduled, spans):
            prompt_rows = logits[row0:row0 + num_prompt_rows] if num_prompt_rows else None
            sample_row = logits[row0 + num_prompt_rows] if has_sample else None
            result[s.request_id] = RequestLogits(prompt_rows, sample_row, row0 + num_prompt_rows)
        return result

    def _build_batch(self, sched: SchedulerOutput, requests: dict[str, Request]):
        """Flat inputs of one step, vectorized over requests (the per-request Python work is a
        token slice and a block-table row; positions and slots are computed in numpy)."""
        bs = self.block_size
        num_reqs = len(sched.scheduled)
        token_ids, logits_idx, spans = [], [], []
        starts = np.empty(num_reqs, np.int64)
        counts = np.empty(num_reqs, np.int64)
        max_blocks = max(len(s.block_ids) for s in sched.scheduled)
        tables = np.zeros((num_reqs, max_blocks), np.int32)
        offset = 0
        for i, s in enumerate(sched.scheduled):
            req = requests[s.request_id]
            end = s.start + s.num_tokens
            token_ids.extend(req.token_slice(s.start, end))
            starts[i], counts[i] = s.start, s.num_tokens
            tables[i, :len(s.block_ids)] = s.block_ids
            # prompt rows: positions whose next token is still a prompt token
            num_prompt_rows = max(0, min(end, req.num_prompt_tokens - 1) - s.start) if s.wants_prompt_logits else 0
            spans.append((len(logits_idx), num_prompt_rows, s.samples))
            logits_idx.extend(range(offset, offset + num_prompt_rows))
            if s.samples:
                logits_idx.append(offset + s.num_tokens - 1)
            offset += s.num_tokens
        qsl = np.zeros(num_reqs + 1, np.int32)
        np.cumsum(counts, out=qsl[1:])
        owner = np.repeat(np.arange(num_reqs), counts)                      # [T] request of each token
        positions = np.arange(offset, dtype=np.int64) - (qsl[:-1] - starts)[owner]
        slots = tables[owner, positions // bs].astype(np.int64) * bs + positions % bs
        be = self.backend
        batch = ForwardBatch(
            token_ids=be.asarray(np.asarray(token_ids, np.int64)),
            positions=be.asarray(positions),
            slot_mapping=be.asarray(slots),
            block_tables=be.asarray(tables),
            seq_lens=be.asarray((starts + counts).astype(np.int32)),
            query_start_loc=be.asarray(qsl),
            logits_indices=be.asarray(np.asarray(logits_idx, np.int64)),
        )
        return batch, spans
