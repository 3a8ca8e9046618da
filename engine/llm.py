"""LLM: the embedded, synchronous facade (vLLM's `LLM` class)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.builder import build_engine
from engine.outputs import RequestOutput
from engine.output_processor import RequestState
from engine.sampling_params import SamplingParams

Prompt = str | list[int] | dict[str, Any]


class LLM:
    """Load a model and generate from it.

    >>> llm = LLM()  # the bundled default model; or LLM("path/to/model")
    >>> llm.generate("def fib(n):", SamplingParams(max_tokens=32, temperature=0))[0].outputs[0].text

    `model` is a Hugging Face model directory; None (the default) loads the small Python-code
    model shipped with hearth (engine/default_model). `dtype` chooses the in-memory weight dtype
    ("bfloat16" or "float32"; default: as stored, fp16 widened to fp32). `max_model_len` caps
    prompt + output tokens (default: the model's limit, within the KV cache budget
    `kv_cache_memory` bytes). `seed` seeds sampling of requests that carry no seed of their own.
    """

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu", dtype: str | None = None,
                 quantization: str | None = None, max_model_len: int | None = None,
                 seed: int | None = None, **engine_kwargs: Any) -> None:
        if quantization is not None:
            raise ValueError(f"quantization {quantization!r} is not supported yet; use None")
        self.engine, self.tokenizer, self.config = build_engine(
            model, device=device, dtype=dtype, max_model_len=max_model_len, seed=seed, **engine_kwargs)
        self._ids = itertools.count()
        self._children: dict[str, tuple[RequestState, int]] = {}

    # ------------------------------------------------------------------ public API

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's generation_config.json defaults."""
        return SamplingParams(**self.config.generation_defaults)

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 ) -> list[RequestOutput]:
        """Complete each prompt (a string, a list of token ids, or {"prompt_token_ids": [...]})
        and return one finished RequestOutput per prompt, in order."""
        prompts = _as_prompt_list(prompts)
        params = self._params_list(sampling_params, len(prompts))
        states = self._add_all(prompts, params)
        try:
            while not all(s.finished for s in states):
                self._step()
        finally:
            self._abort(states)
        return [s.output(delta=False) for s in states]

    def chat(self, messages: list[dict[str, Any]] | Sequence[list[dict[str, Any]]],
             sampling_params: SamplingParams | None = None, *, add_generation_prompt: bool = True,
             chat_template_kwargs: dict[str, Any] | None = None) -> list[RequestOutput]:
        """Apply the model's chat template to one conversation (or a list of them) and generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompts: list[Prompt] = []
        for conv in conversations:
            text = self.tokenizer.apply_chat_template(
                conv, add_generation_prompt=add_generation_prompt, **(chat_template_kwargs or {}))
            # the template writes BOS and other special tokens itself
            prompts.append({"prompt": text, "prompt_token_ids": self.tokenizer.encode(text, add_special_tokens=False)})
        return self.generate(prompts, sampling_params)

    def stream(self, prompt: Prompt, sampling_params: SamplingParams | None = None) -> Iterator[RequestOutput]:
        """Yield RequestOutput deltas (new text, token ids, logprobs) as tokens arrive; the last
        one has finished=True. Closing the iterator early aborts the request."""
        params = self._params_list(sampling_params, 1)
        (state,) = self._add_all([prompt], params)
        try:
            while not state.finished:
                if state in self._step():
                    yield state.output(delta=True)
        finally:
            self._abort([state])

    # ------------------------------------------------------------------ internals

    def _params_list(self, sp, count: int) -> list[SamplingParams]:
        if sp is None:
            return [self.get_default_sampling_params()] * count
        if isinstance(sp, SamplingParams):
            return [sp] * count
        sp = list(sp)
        if len(sp) != count:
            raise ValueError(f"sampling_params: got {len(sp)} for {count} prompts")
        if not all(isinstance(p, SamplingParams) for p in sp):
            raise ValueError("sampling_params must be SamplingParams objects")
        return sp

    def _tokenize(self, prompt: Prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            text, ids = prompt, self.tokenizer.encode(prompt)
        elif isinstance(prompt, dict):
            text, ids = prompt.get("prompt"), prompt.get("prompt_token_ids")
            if ids is None:
                if not isinstance(text, str):
                    raise ValueError("prompt dict needs 'prompt' (str) or 'prompt_token_ids'")
                ids = self.tokenizer.encode(text)
        else:
            text, ids = None, prompt
        ids = [int(t) for t in ids] if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                                           for t in ids) else None
        if ids is None:
            raise ValueError("prompt token ids must be integers")
        vocab = self.config.model.vocab_size
        if not ids:
            raise ValueError("prompt must not be empty")
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"prompt token id {bad} is out of range for vocab_size {vocab}")
        limit = self.config.scheduler.max_model_len
        if len(ids) > limit:
            raise ValueError(f"prompt has {len(ids)} tokens, more than max_model_len ({limit})")
        return text, ids

    def _add_all(self, prompts: list[Prompt], params: list[SamplingParams]) -> list[RequestState]:
        tokenized = [self._tokenize(p) for p in prompts]  # validate everything before queueing
        states: list[RequestState] = []
        try:
            for (text, ids), sp in zip(tokenized, params):
                states.append(self._add_one(text, ids, sp))
        except Exception:
            self._abort(states)
            raise
        return states

    def _add_one(self, text: str | None, ids: list[int], sp: SamplingParams) -> RequestState:
        request_id = str(next(self._ids))
        sp = sp.clone(_eos_token_ids=self.config.eos_token_ids)
        state = RequestState(request_id, text, ids, sp, self.tokenizer)
        for i in range(sp.n):
            child_id = f"{request_id}-{i}"
            seed = sp.seed
            if seed is not None and sp.n > 1:  # distinct but reproducible streams per sample
                seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            child = sp.clone(n=1, seed=seed)
            self._children[child_id] = (state, i)
            try:
                self.engine.add_request(child_id, ids, child,
                                        wants_prompt_logprobs=i == 0 and sp.prompt_logprobs is not None)
            except Exception:
                self._children.pop(child_id)
                self._abort([state])
                raise
        return state

    def _step(self) -> set[RequestState]:
        if not self.engine.has_unfinished:  # an invariant, not user error: never spin forever
            raise RuntimeError("engine has no work left but a request is unfinished")
        touched = set()
        for ev in self.engine.step():
            state, index = self._children[ev.request_id]
            if state.apply(index, ev):
                self.engine.abort(ev.request_id)  # a stop string ended it
            if state.samples[index].finish_reason is not None:
                self._children.pop(ev.request_id, None)
            touched.add(state)
        return touched

    def _abort(self, states: list[RequestState]) -> None:
        """Free whatever these requests still hold (a no-op for finished ones)."""
        for state in states:
            for i in range(len(state.samples)):
                child_id = f"{state.request_id}-{i}"
                if self._children.pop(child_id, None) is not None:
                    self.engine.abort(child_id)


def _as_prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(t, (int, np.integer)) for t in prompts):
        return [prompts]  # one prompt given as token ids
    if not prompts:
        raise ValueError("prompts must not be empty")
    return prompts
