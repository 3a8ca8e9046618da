"""The part of LLM and AsyncLLM that sits on the engine core: prompt validation, fan-out of the
n samples of a request, and routing of step events to per-request output state."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from hearth.engine.frontends.builder import build_engine
from hearth.engine.model.config import EngineConfig
from hearth.engine.core.engine_core import EngineCore
from hearth.engine.core.outputs import RequestError
from hearth.engine.frontends.output_processor import RequestState
from hearth.engine.core.sampling_params import SamplingParams
from hearth.engine.tokenization.tokenizer import Tokenizer

Prompt = str | list[int] | dict[str, Any]


class ContextLengthError(ValueError):
    """The prompt, or prompt + max_tokens, does not fit the model's context (max_model_len)."""


class EngineFrontend:
    """Validated requests in, RequestStates out. Not thread-safe: one thread drives it."""

    def __init__(self, engine: EngineCore, tokenizer: Tokenizer, config: EngineConfig) -> None:
        self.engine, self.tokenizer, self.config = engine, tokenizer, config
        self._ids = itertools.count()
        self._children: dict[str, tuple[RequestState, int]] = {}
        self.states: dict[str, RequestState] = {}

    @classmethod
    def load(cls, model, *, device: str = "cpu", dtype: str | None = None, quantization: str | None = None,
             max_model_len: int | None = None, seed: int | None = None, **engine_kwargs: Any) -> EngineFrontend:
        """Build the engine for `model` (None: the bundled model); LLM and AsyncLLM both start here."""
        return cls(*build_engine(model, device=device, dtype=dtype, quantization=quantization,
                                 max_model_len=max_model_len, seed=seed, **engine_kwargs))

    def default_params(self) -> SamplingParams:
        """SamplingParams with the model's generation_config.json defaults."""
        return SamplingParams(**self.config.generation_defaults)

    def params_list(self, sp: SamplingParams | Sequence[SamplingParams] | None, count: int) -> list[SamplingParams]:
        """One SamplingParams per prompt (None: the model's defaults)."""
        if sp is None:
            return [self.default_params()] * count
        if isinstance(sp, SamplingParams):
            return [sp] * count
        sp = list(sp)
        if len(sp) != count:
            raise ValueError(f"sampling_params: got {len(sp)} for {count} prompts")
        if not all(isinstance(p, SamplingParams) for p in sp):
            raise ValueError("sampling_params must be SamplingParams objects")
        return sp

    def tokenize(self, prompt: Prompt, params: SamplingParams) -> tuple[str | None, list[int]]:
        """(text, token ids) of a prompt, checked with `params` against the model and the context
        length. Every ValueError's first word names the field at fault (prompt, stop_token_ids,
        logit_bias, n, ...): the HTTP layer reports it as the error's `param`."""
        if isinstance(prompt, str):
            text, ids = prompt, self._encode(prompt)
        elif isinstance(prompt, dict):
            text, ids = prompt.get("prompt"), prompt.get("prompt_token_ids")
            if ids is None:
                if not isinstance(text, str):
                    raise ValueError("prompt dict needs 'prompt' (str) or 'prompt_token_ids'")
                ids = self._encode(text)
        elif isinstance(prompt, (list, tuple)):
            text, ids = None, prompt
        else:
            raise ValueError(f"prompt must be a string, a list of token ids or a dict, not {type(prompt).__name__}")
        if not isinstance(ids, (list, tuple)) or not all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in ids):
            raise ValueError("prompt token ids must be a list of integers")
        ids = [int(t) for t in ids]
        self._check_fits(ids, params)
        return text, ids

    def _encode(self, text: str) -> list[int]:
        try:
            return self.tokenizer.encode(text)
        except Exception as exc:  # e.g. a lone surrogate the tokenizer cannot take: bad input
            raise ValueError(f"prompt could not be tokenized: {exc}") from None

    def _check_fits(self, ids: list[int], params: SamplingParams) -> None:
        """The prompt and every token id `params` carry are in the vocabulary; the request fits
        the context and the batch."""
        params.validate()  # params may have been changed since they were built
        vocab = self.config.model.vocab_size
        if not ids:
            raise ValueError("prompt must not be empty")
        for name, tokens in (("prompt", ids), ("stop_token_ids", params.stop_token_ids),
                             ("logit_bias", params.logit_bias or ())):
            bad = next((t for t in tokens if not 0 <= t < vocab), None)
            if bad is not None:
                raise ValueError(f"{name} token id {_show(bad)} is out of range for vocab_size {vocab}")
        if params.n > self.config.scheduler.max_num_seqs:
            raise ValueError(f"n ({_show(params.n)}) must not exceed max_num_seqs "
                             f"({self.config.scheduler.max_num_seqs}), the sequences the engine runs at once")
        limit = self.config.scheduler.max_model_len
        if len(ids) > limit:
            raise ContextLengthError(f"prompt has {len(ids)} tokens, more than max_model_len ({limit})")
        if params.max_tokens is not None and len(ids) + params.max_tokens > limit:
            raise ContextLengthError(
                f"prompt ({len(ids)} tokens) + max_tokens ({_show(params.max_tokens)}) = "
                f"{_show(len(ids) + params.max_tokens)} tokens, more than max_model_len ({limit})")

    def add(self, text: str | None, ids: list[int], sp: SamplingParams,
            request_id: str | None = None) -> RequestState:
        """Queue one validated prompt as n engine requests; returns its output state."""
        request_id = str(next(self._ids)) if request_id is None else request_id
        if request_id in self.states:
            raise ValueError(f"request id {request_id!r} is already in use")
        sp = sp.clone(_eos_token_ids=self.config.eos_token_ids)
        state = RequestState(request_id, text, ids, sp, self.tokenizer)
        self.states[request_id] = state
        try:
            for i in range(sp.n):
                seed = sp.seed
                if seed is not None and sp.n > 1:  # distinct but reproducible streams per sample
                    seed = int(np.random.SeedSequence([seed % 2**64, i]).generate_state(1)[0])
                child_id = f"{request_id}-{i}"
                self._children[child_id] = (state, i)
                self.engine.add_request(child_id, ids, sp.clone(n=1, seed=seed),
                                        wants_prompt_logprobs=i == 0 and sp.prompt_logprobs is not None)
        except Exception:
            self.abort(state)
            raise
        return state

    @property
    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished

    @property
    def has_work(self) -> bool:
        return self.engine.has_work

    def pause(self, state: RequestState, paused: bool = True) -> None:
        """Hold (or resume) every sample of a request."""
        for i in range(len(state.samples)):
            self.engine.pause(f"{state.request_id}-{i}", paused)

    def step(self) -> set[RequestState]:
        """One engine step; the states that changed (finished ones are forgotten here). A state
        that the engine failed, or whose output handling raised, carries the exception in
        `error` (a RequestError for the former) and is aborted: its other samples too."""
        touched = set()
        for ev in self.engine.step():
            entry = self._children.get(ev.request_id)
            if entry is None:  # a sibling sample failed earlier in this step: the request is gone
                continue
            state, index = entry
            touched.add(state)
            if state.error is not None:
                continue
            if ev.error is not None:  # the engine failed this sample: the request fails alone
                state.error = RequestError(ev.error)
                self.abort(state)
                continue
            try:
                if state.apply(index, ev):
                    self.engine.abort(ev.request_id)  # a stop string ended it
            except Exception as exc:  # this request's output failed: it alone is dropped
                state.error = exc
                self.abort(state)
                continue
            if state.samples[index].finish_reason is not None:
                self._children.pop(ev.request_id, None)
        for state in touched:
            if state.finished:
                self.states.pop(state.request_id, None)
        return touched

    def abort(self, state: RequestState) -> None:
        """Free whatever the request still holds (a no-op once it finished)."""
        for i in range(len(state.samples)):
            child_id = f"{state.request_id}-{i}"
            if self._children.pop(child_id, None) is not None:
                self.engine.abort(child_id)
        self.states.pop(state.request_id, None)


def request_failure(state: RequestState) -> RequestError:
    """The error a caller sees for a request whose handling failed (`state.error` is set)."""
    err = state.error
    detail = str(err) if isinstance(err, RequestError) else repr(err)
    return RequestError(f"request {state.request_id!r} failed: {detail}")


def _show(value: int) -> str:
    """An int for an error message; one too long to print (Python refuses past 4300 digits)
    is shown by its size."""
    return str(value) if value.bit_length() <= 256 else f"<a {value.bit_length()}-bit integer>"
