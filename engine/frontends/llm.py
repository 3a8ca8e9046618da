"""LLM: the embedded, synchronous facade (vLLM's `LLM` class)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hearth.engine.core.engine_core import EngineStats
from hearth.engine.frontends.frontend import EngineFrontend, Prompt, request_failure
from hearth.engine.core.outputs import RequestOutput
from hearth.engine.frontends.output_processor import RequestState
from hearth.engine.core.sampling_params import SamplingParams


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
        self._frontend = EngineFrontend.load(model, device=device, dtype=dtype, quantization=quantization,
                                             max_model_len=max_model_len, seed=seed, **engine_kwargs)
        self.engine, self.tokenizer, self.config = self._frontend.engine, self._frontend.tokenizer, self._frontend.config

    # ------------------------------------------------------------------ public API

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's generation_config.json defaults."""
        return self._frontend.default_params()

    def get_stats(self) -> EngineStats:
        """Counters and gauges of the engine (requests, KV cache, prefix cache, preemptions)."""
        return self.engine.stats()

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 ) -> list[RequestOutput]:
        """Complete each prompt (a string, a list of token ids, or {"prompt_token_ids": [...]})
        and return one finished RequestOutput per prompt, in order. All prompts run together
        as one continuously batched workload. Bad input raises ValueError before anything runs;
        a request that fails inside the engine raises RequestError naming it (the rest of this
        call is dropped, and the engine stays ready for the next one)."""
        prompts = _as_prompt_list(prompts)
        params = self._frontend.params_list(sampling_params, len(prompts))
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
        params = self._frontend.params_list(sampling_params, 1)
        (state,) = self._add_all([prompt], params)
        try:
            while not state.finished:
                if state in self._step():
                    yield state.output(delta=True)
        finally:
            self._abort([state])

    # ------------------------------------------------------------------ internals

    def _add_all(self, prompts: list[Prompt], params: list[SamplingParams]) -> list[RequestState]:
        tokenized = [self._frontend.tokenize(p, sp) for p, sp in zip(prompts, params)]  # validate all first
        states: list[RequestState] = []
        try:
            for (text, ids), sp in zip(tokenized, params):
                states.append(self._frontend.add(text, ids, sp))
        except Exception:
            self._abort(states)
            raise
        return states

    def _step(self) -> set[RequestState]:
        if not self._frontend.has_unfinished:  # an invariant, not user error: never spin forever
            raise RuntimeError("engine has no work left but a request is unfinished")
        touched = self._frontend.step()
        for state in touched:
            if state.error is not None:  # it alone failed (and is freed); the engine carries on
                raise request_failure(state) from state.error
        return touched

    def _abort(self, states: list[RequestState]) -> None:
        """Free whatever these requests still hold (a no-op for finished ones)."""
        for state in states:
            self._frontend.abort(state)


def _as_prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(t, (int, np.integer)) for t in prompts):
        return [prompts]  # one prompt given as token ids
    if not prompts:
        raise ValueError("prompts must not be empty")
    return prompts
