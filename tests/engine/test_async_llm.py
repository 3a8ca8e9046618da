"""AsyncLLM: concurrent streams, cancellation, abort, per-request failures and engine faults."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from hearth import AsyncLLM, EngineDeadError, SamplingParams
from hearth.engine.frontends.output_processor import RequestState


@pytest.fixture()
def engine(tiny_model_dir):
    eng = AsyncLLM(str(tiny_model_dir), max_model_len=256, num_kv_blocks=64, max_num_seqs=16)
    yield eng
    eng.shutdown()


async def _collect(engine: AsyncLLM, prompt, sp: SamplingParams, request_id: str | None = None,
                   started: asyncio.Event | None = None):
    """(token ids, text, finish_reason) of one stream, built from its deltas; `started` is set
    once the first delta arrived."""
    ids, text, reason = [], "", None
    async for out in engine.generate(prompt, sp, request_id=request_id):
        ids += out.outputs[0].token_ids
        text += out.outputs[0].text
        reason = out.outputs[0].finish_reason
        if started is not None:
            started.set()
    return ids, text, reason


async def _wait_idle(engine: AsyncLLM) -> None:
    for _ in range(500):
        stats = engine.get_stats()
        if stats.num_running == stats.num_waiting == 0 and stats.kv_cache_usage == 0.0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine never went idle: {engine.get_stats()}")


def test_50_concurrent_streams_some_cancelled(engine, tiny_llm):
    rng = np.random.default_rng()
    prompts = [rng.integers(3, 400, size=int(rng.integers(2, 40))).tolist() for _ in range(50)]
    sp = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in tiny_llm.generate(prompts, sp)]
    cancelled = set(range(0, 50, 7))

    async def main():
        started = [asyncio.Event() for _ in prompts]
        tasks = [asyncio.create_task(_collect(engine, p, sp, f"req-{i}", started[i])) for i, p in enumerate(prompts)]
        for i in cancelled:  # a client going away mid-stream
            await started[i].wait()
            tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await _wait_idle(engine)
        return results

    results = asyncio.run(main())
    assert sum(isinstance(results[i], asyncio.CancelledError) for i in cancelled) >= len(cancelled) // 2
    for i, res in enumerate(results):
        if i in cancelled and isinstance(res, asyncio.CancelledError):
            continue
        ids, _, reason = res
        assert ids == expected[i] and reason == "length"
    kv = engine.engine.kv_cache
    assert kv.num_free_blocks == kv.pool.num_blocks


def test_abort_by_id_ends_the_stream_and_frees_blocks(engine):
    sp = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)

    async def main():
        seen = []
        async for out in engine.generate([5, 6, 7, 8], sp, request_id="victim"):
            seen.append(out)
            if len(seen) == 3:
                await engine.abort("victim")
        await _wait_idle(engine)
        return seen

    seen = asyncio.run(main())
    assert seen[-1].finished and seen[-1].outputs[0].finish_reason == "abort"
    assert len(sum((o.outputs[0].token_ids for o in seen), [])) < 200


def test_bad_input_raises_before_queueing(engine):
    async def main():
        with pytest.raises(ValueError, match="max_model_len"):
            async for _ in engine.generate(list(range(3, 300)), SamplingParams(max_tokens=1)):
                pass
        with pytest.raises(ValueError, match="out of range"):
            async for _ in engine.generate([10**7], SamplingParams(max_tokens=1)):
                pass
        agen = engine.generate([3, 4], SamplingParams(max_tokens=50, ignore_eos=True), request_id="dup")
        await agen.__anext__()
        with pytest.raises(ValueError, match="already in use"):
            async for _ in engine.generate([3, 4], SamplingParams(max_tokens=1), request_id="dup"):
                pass
        await agen.aclose()
        await _wait_idle(engine)

    asyncio.run(main())
    assert engine.is_healthy


def test_a_failing_request_fails_alone(engine, monkeypatch):
    original = RequestState.apply

    def apply(self, index, ev):
        if self.request_id == "bad":
            raise KeyError("detokenizer exploded")
        return original(self, index, ev)

    monkeypatch.setattr(RequestState, "apply", apply)
    sp = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)

    async def main():
        good = asyncio.create_task(_collect(engine, [3, 4, 5], sp, request_id="good"))
        bad = asyncio.create_task(_collect(engine, [3, 4, 6], sp, request_id="bad"))
        results = await asyncio.gather(good, bad, return_exceptions=True)
        await _wait_idle(engine)
        return results

    good, bad = asyncio.run(main())
    assert len(good[0]) == 8 and good[2] == "length"
    assert isinstance(bad, RuntimeError) and "detokenizer exploded" in str(bad)
    assert engine.is_healthy and not engine.errored


def test_engine_fault_fails_every_request_with_the_reason(engine, monkeypatch):
    def broken_step():
        raise MemoryError("simulated kernel failure")

    sp = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)

    async def main():
        monkeypatch.setattr(engine.engine, "step", broken_step)
        results = await asyncio.gather(*(_collect(engine, [3, 4, i], sp) for i in range(5, 9)),
                                       return_exceptions=True)
        with pytest.raises(EngineDeadError):
            async for _ in engine.generate([3, 4], sp):
                pass
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, EngineDeadError) and "simulated kernel failure" in str(r) for r in results)
    assert engine.errored and not engine.is_healthy
    assert "simulated kernel failure" in str(engine.dead_error)


def test_stream_text_matches_sync_llm(engine, tiny_llm):
    sp = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, n=2, seed=3)
    ids, text, _ = asyncio.run(_collect(engine, "def f(x):", sp.clone(n=1)))
    ref = tiny_llm.generate("def f(x):", sp.clone(n=1))[0].outputs[0]
    assert (ids, text) == (ref.token_ids, ref.text)


def test_a_slow_reader_gets_merged_deltas_that_add_up(engine, tiny_llm):
    """A reader that falls behind gets fewer, merged deltas; per sample, their token ids, text
    and log-probs concatenate to exactly the whole output, and the finish state is the last."""
    sp = SamplingParams(max_tokens=24, temperature=0.9, seed=5, ignore_eos=True, n=2, logprobs=2)
    ref = tiny_llm.generate("def g(y):", sp)[0]

    async def main():
        deltas = []
        async for out in engine.generate("def g(y):", sp):
            deltas.append(out)
            time.sleep(0.05)  # block the event loop: the engine runs ahead of this reader
        return deltas

    deltas = asyncio.run(main())
    assert len(deltas) < 24, "nothing was merged although the reader blocked its loop"
    assert deltas[-1].finished and not any(d.finished for d in deltas[:-1])
    for want in ref.outputs:
        got = [c for d in deltas for c in d.outputs if c.index == want.index]
        assert sum((c.token_ids for c in got), []) == want.token_ids
        assert "".join(c.text for c in got) == want.text
        assert sum((c.logprobs for c in got), []) == want.logprobs
        assert got[-1].finish_reason == want.finish_reason == "length"
        assert got[-1].cumulative_logprob == pytest.approx(want.cumulative_logprob)


def test_stream_interval_batches_deltas_after_the_first_token(tiny_model_dir, tiny_llm):
    eng = AsyncLLM(str(tiny_model_dir), max_model_len=256, num_kv_blocks=64, stream_interval=4)
    try:
        sp = SamplingParams(max_tokens=18, temperature=0, ignore_eos=True)

        async def main():
            return [out async for out in eng.generate("def h(z):", sp)]

        deltas = asyncio.run(main())
    finally:
        eng.shutdown()
    sizes = [len(d.outputs[0].token_ids) for d in deltas]
    # the first token at once, then every 4, then the rest: [1, 4, 4, 4, 4, 1] (a lagging
    # reader may see neighbours merged, which keeps these residues)
    assert sizes[0] % 4 == 1 and all(s % 4 == 0 for s in sizes[1:-1]) and len(sizes) <= 6, sizes
    ref = tiny_llm.generate("def h(z):", sp)[0].outputs[0]
    assert sum((d.outputs[0].token_ids for d in deltas), []) == ref.token_ids
    assert "".join(d.outputs[0].text for d in deltas) == ref.text
    with pytest.raises(ValueError, match="stream_interval"):
        AsyncLLM(str(tiny_model_dir), stream_interval=0)


def test_a_reader_that_falls_behind_pauses_its_request_and_loses_nothing(tiny_model_dir):
    """Past stream_backlog_tokens unread tokens the engine stops generating for a request (its
    KV blocks kept); once the reader catches up it resumes, and the tokens are those of an
    unpaused run."""
    sp = SamplingParams(max_tokens=120, temperature=0, ignore_eos=True)
    eng = AsyncLLM(str(tiny_model_dir), max_model_len=256, num_kv_blocks=64, stream_backlog_tokens=8)
    try:
        async def run():
            ids, stalls = [], []
            gen = eng.generate("def f(x):", sp)
            async for out in gen:
                ids += out.outputs[0].token_ids
                if len(ids) in range(20, 40) and not stalls:  # stop reading for a while, once
                    before = eng.get_stats().num_generation_tokens
                    await asyncio.sleep(0.5)
                    stalls.append(eng.get_stats().num_generation_tokens - before)
                    assert eng.get_stats().kv_cache_usage > 0  # paused, not freed
            other = await _collect(eng, "import os", SamplingParams(max_tokens=5, temperature=0))
            return ids, stalls, other

        ids, stalls, other = asyncio.run(run())
        assert len(ids) == 120 and other[2] == "length"
        # in 0.5 s unpaused it would have finished all 120 tokens; paused it makes at most the backlog
        assert stalls and stalls[0] <= 8 + 2, stalls
    finally:
        eng.shutdown()
    ref = AsyncLLM(str(tiny_model_dir), max_model_len=256, num_kv_blocks=64)
    try:
        assert asyncio.run(_collect(ref, "def f(x):", sp))[0] == ids
    finally:
        ref.shutdown()
