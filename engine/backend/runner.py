"""Turns a SchedulerOutput into the flat inputs of one forward pass, runs the model, and returns
the logits rows each request needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hearth.engine.backend.base import Backend
from hearth.engine.model.config import EngineConfig
from hearth.engine.model.llama import ForwardBatch, LlamaForCausalLM, host_logits
from hearth.engine.core.outputs import SchedulerOutput
from hearth.engine.core.request import Request
from hearth.engine.core.sampler import Sampler, TokenLogprobs


@dataclass
class RequestLogits:
    """A request's rows in the step's logits: prompt-position rows and the sampling row."""

    prompt_rows: np.ndarray | None  # [n, V] host: row j predicts token start + j + 1
    sample_index: int = -1  # row of the request's sampling row in the step's logits, -1: none


@dataclass
class StepInputs:
    """The flat host inputs of one step (numpy), before they go to the device."""

    token_ids: np.ndarray  # [T] int64
    positions: np.ndarray  # [T] int64
    slot_mapping: np.ndarray  # [T] int64
    block_tables: np.ndarray  # [S, max_blocks] int32
    seq_lens: np.ndarray  # [S] int32
    query_start_loc: np.ndarray  # [S + 1] int32
    logits_indices: np.ndarray  # [L] int64
    spans: list[tuple[int, int, bool]]  # per request: (first logits row, prompt rows, samples)

    @property
    def decode_only(self) -> bool:
        """Every sequence contributes exactly one token (and so one sampling row)."""
        return len(self.token_ids) == len(self.seq_lens)


def build_step_inputs(sched: SchedulerOutput, requests: dict[str, Request], block_size: int) -> StepInputs:
    """Flat inputs of one step, vectorized over requests (the per-request Python work is a token
    slice and a block-table row; positions and slots are computed in numpy)."""
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
    slots = tables[owner, positions // block_size].astype(np.int64) * block_size + positions % block_size
    return StepInputs(np.asarray(token_ids, np.int64), positions, slots, tables,
                      (starts + counts).astype(np.int32), qsl, np.asarray(logits_idx, np.int64), spans)


def request_logits(sched: SchedulerOutput, spans, prompt_rows_of) -> dict[str, RequestLogits]:
    """Each scheduled request's RequestLogits; `prompt_rows_of(row0, n)` gives n host rows."""
    result = {}
    for s, (row0, num_prompt_rows, has_sample) in zip(sched.scheduled, spans):
        prompt_rows = prompt_rows_of(row0, num_prompt_rows) if num_prompt_rows else None
        result[s.request_id] = RequestLogits(prompt_rows, row0 + num_prompt_rows if has_sample else -1)
    return result


class ModelRunner:
    """Owns the model and its KV caches; executes one scheduled step; samples its logits."""

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
        inputs = build_step_inputs(sched, requests, self.block_size)
        logits = host_logits(self.backend, self.model.forward(self.forward_batch(inputs), self.kv_caches))
        self.last_logits = logits  # [rows, V]: lets the sampler take a view instead of a copy
        return request_logits(sched, inputs.spans, lambda r0, n: logits[r0:r0 + n])

    def forward_batch(self, inputs: StepInputs) -> ForwardBatch:
        """The step's inputs as device arrays."""
        be = self.backend
        return ForwardBatch(
            token_ids=be.asarray(inputs.token_ids), positions=be.asarray(inputs.positions),
            slot_mapping=be.asarray(inputs.slot_mapping), block_tables=be.asarray(inputs.block_tables),
            seq_lens=be.asarray(inputs.seq_lens), query_start_loc=be.asarray(inputs.query_start_loc),
            logits_indices=be.asarray(inputs.logits_indices), decode_only=inputs.decode_only)

    is_async = False  # execute and sample_launch finish their work before returning

    def sample_launch(self, sampler: Sampler, rows: list[int], reqs: list[Request]) -> Any:
        """Start sampling the next token of each request in `reqs` from row `rows[i]` of the last
        step's logits; `sample_collect` of the returned handle gives the tokens (here: at once)."""
        if rows == list(range(rows[0], rows[0] + len(rows))):  # decode: a slice, no copy
            logits = self.last_logits[rows[0]:rows[0] + len(rows)]
        else:
            logits = self.last_logits[rows]
        return sampler.sample(logits, reqs)

    def sample_collect(self, handle: Any) -> tuple[list[int], list[TokenLogprobs | None]]:
        """The tokens (and log-probs) of a `sample_launch`."""
        return handle
