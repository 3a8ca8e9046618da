"""A request can fail only itself: token ids are checked against the vocabulary before anything
is queued, and a request whose sampling, stop check or prompt log-probs raise inside the engine
fails alone while the others run on (LLM, AsyncLLM and EngineCore)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from hearth import AsyncLLM, EngineDeadError, RequestError, SamplingParams
from hearth.engine.core.request import Request
from hearth.engine.core.sampler import SampleFailure, Sampler
from hearth.engine.frontends.frontend import EngineFrontend
from hearth.engine.frontends.output_processor import RequestState


@pytest.fixture()
def engine(tiny_model_dir):
    eng = AsyncLLM(str(tiny_model_dir), max_model_len=256, num_kv_blocks=64, max_num_seqs=16)
    yield eng
    eng.shutdown()


def _bad_id_cases(vocab: int) -> list[tuple[str, dict]]:
    """(field the error must name, SamplingParams kwargs): the reported bug and its relatives."""
    return [("stop_token_ids", {"stop_token_ids": [vocab]}),
            ("stop_token_ids", {"stop_token_ids": [4096]}),  # the reported request (vocab 4096)
            ("stop_token_ids", {"stop_token_ids": [2**70]}),
            ("stop_token_ids", {"stop_token_ids": [3, -1]}),
            ("stop_token_ids", {"stop_token_ids": 7}),
            ("logit_bias", {"logit_bias": {vocab: 1.0}}),
            ("logit_bias", {"logit_bias": {2**70: 1.0}}),
            ("logit_bias", {"logit_bias": {-1: 1.0}}),
            ("logit_bias", {"logit_bias": {"-1": 1.0}}),
            ("temperature", {"temperature": 10**400}),  # no float holds it: no OverflowError later
            ("n", {"n": 10**9})]


def _raises_naming(field: str, fn) -> None:
    with pytest.raises(ValueError) as info:
        fn()
    assert str(info.value).split(" ", 1)[0] == field, str(info.value)


def _idle(engine_core) -> bool:
    stats = engine_core.stats()
    return stats.num_running == stats.num_waiting == 0 and stats.kv_cache_usage == 0.0


def test_bad_token_ids_are_value_errors_naming_the_field_in_llm(tiny_llm):
    vocab = tiny_llm.config.model.vocab_size
    for field, kw in _bad_id_cases(vocab):
        _raises_naming(field, lambda kw=kw: tiny_llm.generate("a", SamplingParams(max_tokens=4, min_tokens=1, **kw)))
    _raises_naming("prompt", lambda: tiny_llm.generate([1, vocab], SamplingParams(max_tokens=2)))
    _raises_naming("prompt", lambda: tiny_llm.generate([[1, 2**70]], SamplingParams(max_tokens=2)))
    # changed after construction: validation runs again before queueing
    sp = SamplingParams(max_tokens=4, min_tokens=1)
    sp.stop_token_ids = [vocab]
    _raises_naming("stop_token_ids", lambda: tiny_llm.generate("a", sp))
    assert _idle(tiny_llm.engine)
    assert tiny_llm.generate("a", SamplingParams(max_tokens=4, min_tokens=1, stop_token_ids=[vocab - 1]))


def test_bad_token_ids_are_value_errors_in_async_llm(engine):
    vocab = engine.config.model.vocab_size

    async def generate(sp):
        async for _ in engine.generate("a", sp):
            pass

    for field, kw in _bad_id_cases(vocab):
        try:
            sp = SamplingParams(max_tokens=4, min_tokens=1, **kw)
        except ValueError as exc:  # types and signs: SamplingParams itself refuses them
            assert str(exc).split(" ", 1)[0] == field, str(exc)
            continue
        _raises_naming(field, lambda sp=sp: engine.validate("a", sp))
        _raises_naming(field, lambda sp=sp: asyncio.run(generate(sp)))
    assert engine.is_healthy and _idle(engine.engine)


def _run_core(core, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, list]:
    """Add requests straight to the engine core (no validation) and step it dry; each id's events."""
    for rid, (prompt, sp) in requests.items():
        core.add_request(rid, prompt, sp)
    events: dict[str, list] = {rid: [] for rid in requests}
    for _ in range(200):
        if not core.has_unfinished:
            break
        for ev in core.step():
            events[ev.request_id].append(ev)
    assert not core.has_unfinished
    return events


def _tokens(evs) -> list[int]:
    return [t for ev in evs for t in ev.new_token_ids]


def _sabotaged(**changes) -> SamplingParams:
    """Params that passed validation and were broken afterwards (what a validation gap lets in)."""
    sp = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    for name, value in changes.items():
        setattr(sp, name, value)
    return sp


@pytest.mark.parametrize("changes,where", [
    ({"stop_token_ids": [4096, 2**70], "min_tokens": 2}, "sampling failed: IndexError"),
    ({"logit_bias": {10**6: 3.0}}, "sampling failed: IndexError"),
    ({"temperature": "hot"}, "sampling failed: TypeError"),
    ({"max_tokens": "many"}, "stop check failed: TypeError"),
    ({"prompt_logprobs": "all"}, "prompt logprobs failed: TypeError"),
])
def test_a_request_failing_inside_the_engine_fails_alone(tiny_llm, changes, where):
    core = tiny_llm.engine
    greedy = SamplingParams(max_tokens=7, temperature=0, ignore_eos=True)
    sampled = SamplingParams(max_tokens=7, temperature=0.8, seed=5, ignore_eos=True, repetition_penalty=1.3,
                             logit_bias={5: 2.0}, min_tokens=3, stop_token_ids=[9])
    alone = {rid: tiny_llm.generate([[3, 4, 5 + i]], sp)[0].outputs[0].token_ids
             for i, (rid, sp) in enumerate((("g", greedy), ("s", sampled)))}
    events = _run_core(core, {"g": ([3, 4, 5], greedy), "bad": ([7, 8], _sabotaged(**changes)),
                              "s": ([3, 4, 6], sampled)})
    last = events["bad"][-1]
    assert last.finish_reason == "error" and where in last.error, last
    assert [ev.finish_reason for ev in events["bad"][:-1]] == [None] * (len(events["bad"]) - 1)
    assert _tokens(events["g"]) == alone["g"] and events["g"][-1].finish_reason == "length"
    assert _tokens(events["s"]) == alone["s"]
    assert _idle(core) and not core.scheduler.requests
    assert tiny_llm.generate([[3, 4, 5]], greedy)[0].outputs[0].token_ids == alone["g"]  # still serving


def test_llm_generate_raises_a_request_error_and_keeps_serving(tiny_llm, monkeypatch):
    vocab = tiny_llm.config.model.vocab_size
    sp = SamplingParams(max_tokens=4, min_tokens=1, temperature=0, stop_token_ids=[vocab])
    monkeypatch.setattr(EngineFrontend, "_check_fits", lambda self, ids, params: None)  # a validation gap
    with pytest.raises(RequestError, match=r"request '\d+' failed: sampling failed: IndexError"):
        tiny_llm.generate(["a", "b"], [sp, sp.clone(stop_token_ids=[])])
    monkeypatch.undo()
    assert _idle(tiny_llm.engine) and not tiny_llm._frontend.states
    assert len(tiny_llm.generate("b", SamplingParams(max_tokens=3))[0].outputs[0].token_ids) == 3


def test_async_stream_of_a_failing_request_raises_and_the_others_finish(engine, tiny_llm, monkeypatch):
    """The reported crash (an out-of-range stop id with min_tokens), let through a validation gap:
    that stream raises RequestError, the engine thread lives, the neighbours finish as alone."""
    vocab = engine.config.model.vocab_size
    good = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in tiny_llm.generate([[3, 4, i] for i in range(5, 9)], good)]
    monkeypatch.setattr(EngineFrontend, "_check_fits", lambda self, ids, params: None)
    bad = SamplingParams(max_tokens=4, min_tokens=1, stop_token_ids=[vocab, 2**70])

    async def collect(prompt, sp, rid=None):
        ids = []
        async for out in engine.generate(prompt, sp, request_id=rid):
            ids += out.outputs[0].token_ids
        return ids

    async def main():
        tasks = [collect([3, 4, i], good) for i in range(5, 9)]
        results = await asyncio.gather(*tasks[:2], collect("a", bad, "bad"), *tasks[2:], return_exceptions=True)
        for _ in range(500):
            if _idle(engine.engine):
                break
            await asyncio.sleep(0.01)
        again = await collect([3, 4, 5], good)
        return results, again

    results, again = asyncio.run(main())
    failure = results.pop(2)
    assert isinstance(failure, RequestError) and "request 'bad' failed: sampling failed" in str(failure)
    assert results == expected and again == expected[0]
    assert engine.is_healthy and _idle(engine.engine)


def test_one_failing_sample_of_n_fails_its_request_only(engine, monkeypatch):
    """Sample 0's output handling raises in the step that also carries its siblings' tokens:
    the request fails (siblings dropped with it), the engine thread and other requests live."""
    original = RequestState.apply

    def apply(self, index, ev):
        if self.request_id == "bad" and index == 0:
            raise KeyError("detokenizer exploded")
        return original(self, index, ev)

    monkeypatch.setattr(RequestState, "apply", apply)
    sp = SamplingParams(max_tokens=6, temperature=0.7, seed=1, ignore_eos=True)

    async def collect(rid, n):
        return [out async for out in engine.generate([3, 4, 5], sp.clone(n=n), request_id=rid)]

    async def main():
        results = await asyncio.gather(collect("bad", 3), collect("good", 2), return_exceptions=True)
        for _ in range(500):
            if _idle(engine.engine):
                break
            await asyncio.sleep(0.01)
        return results

    bad, good = asyncio.run(main())
    assert isinstance(bad, RequestError) and "detokenizer exploded" in str(bad)
    assert good[-1].finished and engine.is_healthy and _idle(engine.engine)


def test_shutdown_after_the_engine_died_is_safe(engine, monkeypatch):
    def broken_step():
        raise MemoryError("simulated fault")

    monkeypatch.setattr(engine.engine, "step", broken_step)

    async def main():
        with pytest.raises(EngineDeadError):
            async for _ in engine.generate([3, 4], SamplingParams(max_tokens=4)):
                pass

    asyncio.run(main())
    assert engine.errored
    engine.shutdown()
    engine.shutdown(timeout=0.1)  # twice: still nothing to raise
    assert engine.errored and "simulated fault" in str(engine.dead_error)


def test_sampler_fails_the_broken_row_only():
    rng = np.random.default_rng()
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    ok = SamplingParams(temperature=0)
    broken = SamplingParams(temperature=0, min_tokens=1)
    broken.stop_token_ids = [50]
    reqs = [Request(f"r{i}", [1, 2], sp, i, 100) for i, sp in enumerate((ok, broken, ok))]
    tokens, _ = Sampler(0).sample(logits, reqs)
    assert isinstance(tokens[1], SampleFailure) and "IndexError" in tokens[1].message
    assert [tokens[0], tokens[2]] == [int(logits[0].argmax()), int(logits[2].argmax())]


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("kw", [{"repetition_penalty": 5e-324}, {"temperature": 1e-300},
                                {"repetition_penalty": 5e-324, "temperature": 1e-300, "top_p": 0.5, "min_p": 0.9},
                                {"repetition_penalty": 1e308, "temperature": float("inf")}])
def test_extreme_parameters_sample_without_overflow_warnings(kw):
    rng = np.random.default_rng()
    logits = (rng.normal(size=(1, 300)) * 5).astype(np.float32)
    req = Request("r", [1, 2, 3], SamplingParams(seed=3, **kw), 0, 100, generator=np.random.default_rng(3))
    tokens, _ = Sampler(0).sample(logits, [req])
    assert 0 <= tokens[0] < 300
    if kw == {"temperature": 1e-300}:  # the limit of a vanishing temperature is the argmax
        assert tokens[0] == int(logits[0].argmax())
