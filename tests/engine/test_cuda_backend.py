"""The CUDA backend (engine/backend/cuda/backend.py, engine/backend/cuda/runner.py, engine/backend/cuda/graphs.py,
engine/backend/cuda/sampler.py).

In CI there is no GPU: the whole engine runs with device="cuda" over a stand-in device
(tests/engine/interpreter_device.py) whose arrays are torch CPU tensors for Triton's interpreter
and numpy views for Numba's simulator, so the backend's ops, the padded decode-graph inputs, the
memory sizing and the device sampler all run for real, against the CPU backend. `pytest -m gpu`
runs the same comparisons on a real device, with CUDA graphs captured and replayed.
"""

from __future__ import annotations

import numpy as np
import pytest

from hearth import LLM, SamplingParams
from tests.engine.engine_checks import assert_all_blocks_free, skip_if_cuda_is_usable, token_ids
from hearth.engine.backend.cuda.graphs import choose_bucket, graph_batch_sizes
from hearth.engine.backend.cuda.runner import kv_blocks_for_memory
from hearth.engine.core.sampler import gather_logprobs
from tests.engine.interpreter_device import InterpreterDevice


def _cuda_llm(model_dir, **kw) -> LLM:
    """An engine with device="cuda": on the stand-in in CI, on the real device under -m gpu."""
    import os

    on_gpu = os.environ.get("TRITON_INTERPRET") != "1"
    opts = dict(max_model_len=128, seed=0, max_num_seqs=8, max_num_batched_tokens=64)
    opts.update(kw)
    return LLM(str(model_dir), device="cuda", cuda_device=None if on_gpu else InterpreterDevice(), **opts)



@pytest.fixture(scope="module")
def cuda_fp32(tiny_model_dir):
    return _cuda_llm(tiny_model_dir, dtype="float32")


@pytest.fixture(scope="module")
def cpu_llm(tiny_model_dir):
    return LLM(str(tiny_model_dir), max_model_len=128, seed=0)


# ---------------------------------------------------------------- no GPU needed at all

def test_without_cuda_the_engine_says_so(tiny_model_dir, monkeypatch):
    import hearth.engine.backend.cuda.device as cd

    skip_if_cuda_is_usable()
    with pytest.raises(ValueError, match="device='cuda'"):
        LLM(str(tiny_model_dir), device="cuda")
    # CuPy present but no device: the message says so
    fake = type("FakeCupy", (), {"cuda": type("C", (), {"is_available": staticmethod(lambda: False)})})
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        cd.open_device()


def test_graph_batch_sizes_and_bucket_choice():
    assert graph_batch_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert graph_batch_sizes(3) == [1, 2, 3]
    assert graph_batch_sizes(1) == [1]
    assert graph_batch_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert graph_batch_sizes(4096)[-1] == 512
    sizes = graph_batch_sizes(64)
    assert [choose_bucket(n, sizes) for n in (1, 3, 5, 9, 17, 64)] == [1, 4, 8, 16, 24, 64]
    assert choose_bucket(65, sizes) is None
    with pytest.raises(ValueError):
        graph_batch_sizes(0)


def test_kv_blocks_for_memory_arithmetic():
    gib = 1 << 30
    # 80 GiB device, 0.9 of it = 72 GiB; 20 GiB used -> 52 GiB of 2 MiB blocks
    assert kv_blocks_for_memory(80 * gib, 20 * gib, 0.9, 2 << 20) == 52 * 512
    assert kv_blocks_for_memory(100, 10, 1.0, 30) == 3  # floor
    with pytest.raises(ValueError, match="leaves no room"):
        kv_blocks_for_memory(80 * gib, 75 * gib, 0.9, 2 << 20)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="gpu_memory_fraction"):
            kv_blocks_for_memory(80 * gib, gib, bad, 1 << 20)


# ---------------------------------------------------------------- the engine on the CUDA backend

def test_kv_cache_sized_from_device_memory(cuda_fp32):
    """Stand-in: `total` device bytes, `used` in use after the warm-up step -> blocks of fp32 K and
    V for every layer in 0.9 * total - used."""
    dev = cuda_fp32.engine.runner.device
    if not isinstance(dev, InterpreterDevice):
        pytest.skip("the stand-in's memory figures are known; a real device's are not")
    mc, cache = cuda_fp32.config.model, cuda_fp32.config.cache
    per_block = 2 * cache.block_size * mc.num_key_value_heads * mc.head_dim * 4 * mc.num_hidden_layers
    assert cache.num_blocks == (int(dev.total_bytes * 0.9) - dev.used_bytes) // per_block > 100


def test_too_small_memory_fraction_is_a_clear_error(tiny_model_dir):
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the stand-in decides the used memory")
    with pytest.raises(ValueError, match="gpu_memory_fraction 0.1 .* leaves no room"):
        LLM(str(tiny_model_dir), device="cuda", dtype="float32", max_model_len=64, max_num_batched_tokens=8,
            max_num_seqs=1, gpu_memory_fraction=0.1, cuda_device=InterpreterDevice(8 << 30, 1 << 30))


def test_greedy_fp32_equals_the_cpu_backend(cuda_fp32, cpu_llm):
    """Prefill (eager), decode (the padded graph path) and a mixed step: token for token."""
    runs = []
    graphs = cuda_fp32.engine.runner.graphs
    real_run = graphs.run
    graphs.run = lambda inputs: runs.append(len(inputs.seq_lens)) or real_run(inputs)
    try:
        prompts = ["hello world", "the cat sat on", "a", "def f(x):"]
        sp = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
        assert token_ids(cuda_fp32.generate(prompts, sp)) == token_ids(cpu_llm.generate(prompts, sp))
    finally:
        graphs.run = real_run
    assert 4 in runs, f"decode steps of all four prompts should take the graph path, saw {runs}"
    assert_all_blocks_free(cuda_fp32)


def test_padded_decode_step_equals_the_unpadded_forward(cuda_fp32):
    """3 sequences padded to a 4-row bucket: the same logits as the plain forward, and the pad
    rows write nothing into the KV cache."""
    from hearth.engine.backend.runner import StepInputs

    runner = cuda_fp32.engine.runner
    dev, bs = runner.device, runner.block_size
    rng = np.random.default_rng()
    seq_lens = np.array([5, 17, 33], np.int32)
    tables = np.array([[1, 0, 0], [2, 3, 0], [4, 5, 6]], np.int32)
    positions = (seq_lens - 1).astype(np.int64)
    slots = tables[np.arange(3), positions // bs].astype(np.int64) * bs + positions % bs
    inputs = StepInputs(rng.integers(3, 400, 3).astype(np.int64), positions, slots, tables, seq_lens,
                        np.arange(4, dtype=np.int32), np.arange(3, dtype=np.int64), [(i, 0, True) for i in range(3)])
    used = 8  # blocks 0..7 hold every block of the tables (block 0: the padding rows' table)
    for k, v in runner.kv_caches:  # fresh content in every block the step reads
        k[:used] = dev.asarray(rng.standard_normal((used, *k.shape[1:])).astype(np.float32))
        v[:used] = dev.asarray(rng.standard_normal((used, *v.shape[1:])).astype(np.float32))
    before = [(dev.to_host(k[:used]), dev.to_host(v[:used])) for k, v in runner.kv_caches]
    assert runner.graphs.can_run(inputs) and choose_bucket(3, runner.graphs.sizes) == 4
    padded = dev.to_host(runner.graphs.run(inputs))
    after = [(dev.to_host(k[:used]), dev.to_host(v[:used])) for k, v in runner.kv_caches]
    for (k0, v0), (k1, v1) in zip(before, after):
        flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
        changed = np.nonzero(np.any(flat(k0) != flat(k1), axis=(1, 2)) | np.any(flat(v0) != flat(v1), axis=(1, 2)))[0]
        assert set(changed.tolist()) <= set(slots.tolist()), "a padding row wrote into the cache"
    for (k, v), (k0, v0) in zip(runner.kv_caches, before):  # same cache state for the eager run
        k[:used], v[:used] = dev.asarray(k0), dev.asarray(v0)
    eager = dev.to_host(runner.model.forward(runner.forward_batch(inputs), runner.kv_caches))
    np.testing.assert_allclose(padded, eager, rtol=1e-5, atol=1e-5)
    assert padded.shape == (3, cuda_fp32.config.model.vocab_size)


def test_device_sampler_logprobs_and_host_fallback(cuda_fp32, cpu_llm):
    """Logprobs from the GPU sampler equal the CPU backend's; a request with penalties (sampled on
    the host from its own row) still matches the CPU backend token for token."""
    prompt = "the cat sat on"
    greedy = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, logprobs=3)
    a, b = cuda_fp32.generate(prompt, greedy)[0].outputs[0], cpu_llm.generate(prompt, greedy)[0].outputs[0]
    assert a.token_ids == b.token_ids
    for la, lb in zip(a.logprobs, b.logprobs):
        assert list(la) == list(lb)  # same top ids (and chosen), best first
        np.testing.assert_allclose([x.logprob for x in la.values()], [x.logprob for x in lb.values()],
                                   rtol=1e-4, atol=1e-4)
    penalized = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, repetition_penalty=1.5,
                               frequency_penalty=0.5, logit_bias={5: 3.0}, min_tokens=2)
    assert token_ids(cuda_fp32.generate([prompt, "a"], penalized)) == token_ids(cpu_llm.generate([prompt, "a"], penalized))


def test_seeded_sampling_is_reproducible_and_batch_independent(cuda_fp32):
    sp = SamplingParams(max_tokens=3, temperature=1.0, top_p=0.9, seed=123, ignore_eos=True)
    alone = token_ids(cuda_fp32.generate(["hello world"], sp))[0]
    together = token_ids(cuda_fp32.generate(["a", "hello world", "def"], [
        SamplingParams(max_tokens=3, temperature=0.7, seed=1, ignore_eos=True), sp,
        SamplingParams(max_tokens=3, temperature=0)]))[1]
    assert alone == together


def test_prompt_logprobs_come_back_to_the_host(cuda_fp32, cpu_llm):
    sp = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=2)
    a = cuda_fp32.generate("hello world again", sp)[0].prompt_logprobs
    b = cpu_llm.generate("hello world again", sp)[0].prompt_logprobs
    assert len(a) == len(b)
    for x, y in zip(a[1:], b[1:]):
        assert list(x) == list(y)
        np.testing.assert_allclose([v.logprob for v in x.values()], [v.logprob for v in y.values()],
                                   rtol=1e-4, atol=1e-4)


def test_bf16_agrees_with_the_fp32_cpu_backend_within_tolerance(tiny_model_dir, cpu_llm):
    """bf16 weights, activations and KV cache: the first greedy tokens agree and the chosen
    tokens' log-probs are within bf16 error of the fp32 CPU backend's."""
    llm = _cuda_llm(tiny_model_dir, dtype="bfloat16")
    sp = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True, logprobs=1)
    for prompt in ("hello world", "def f(x):"):
        a, b = llm.generate(prompt, sp)[0].outputs[0], cpu_llm.generate(prompt, sp)[0].outputs[0]
        assert a.token_ids[0] == b.token_ids[0]
        lp_a = a.logprobs[0][a.token_ids[0]].logprob
        lp_b = b.logprobs[0][b.token_ids[0]].logprob
        assert abs(lp_a - lp_b) < 0.1
    assert_all_blocks_free(llm)


def test_gather_logprobs_oracle_sanity():
    """The host log-prob helper the device path is compared with is itself exact."""
    logits = np.random.default_rng().standard_normal((2, 7)).astype(np.float32)
    lp = gather_logprobs(logits, np.array([3, 0]), 2)
    ref = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum(1, keepdims=True))
    assert abs(lp[0].logprob - ref[0, 3]) < 1e-12 and abs(lp[1].logprob - ref[1, 0]) < 1e-12


def test_pipelined_steps_drop_what_an_abort_left_in_flight(cuda_fp32):
    """The GPU runner is asynchronous: step() completes the previous launch and queues the next.
    A request aborted while its step is in flight gets no further events and leaks no blocks;
    the others carry on."""
    core = cuda_fp32.engine
    assert core.runner.is_async
    sp = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
    core.add_request("x-a", [5, 6, 7], sp)
    core.add_request("x-b", [8, 9], sp)
    first = core.step()  # launches the prefill; nothing is complete yet
    assert first == [] and core._in_flight is not None
    core.step()
    core.abort("x-a")  # its next step is already in flight
    events = []
    while core.has_unfinished:
        events += core.step()
    assert all(ev.request_id == "x-b" for ev in events)
    assert sum(len(ev.new_token_ids) for ev in events) + 1 == 5  # one came before the abort
    assert events[-1].finish_reason == "length"
    assert_all_blocks_free(cuda_fp32)


def test_stop_strings_end_requests_on_the_pipelined_engine(cuda_fp32, cpu_llm):
    base = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    text = cpu_llm.generate("the cat sat on", base)[0].outputs[0].text
    stop = text[3:6] if len(text) >= 6 else text[-1:]
    sp = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, stop=[stop])
    a = cuda_fp32.generate(["the cat sat on", "a"], sp)
    b = cpu_llm.generate(["the cat sat on", "a"], sp)
    assert [o.outputs[0].text for o in a] == [o.outputs[0].text for o in b]
    assert a[0].outputs[0].finish_reason == "stop"
    assert_all_blocks_free(cuda_fp32)


def test_async_llm_streams_from_the_cuda_backend(tiny_model_dir, cpu_llm):
    """AsyncLLM steps the engine in its own thread: the pipelined GPU steps stream the same
    tokens as the CPU backend, and a cancelled stream frees its blocks."""
    import asyncio

    from hearth import AsyncLLM

    eng = AsyncLLM(str(tiny_model_dir), device="cuda", dtype="float32", max_model_len=128, max_num_seqs=4,
                   max_num_batched_tokens=32, num_kv_blocks=32, cuda_device=InterpreterDevice())
    sp = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)

    async def collect(prompt):
        ids = []
        async for out in eng.generate(prompt, sp):
            ids += out.outputs[0].token_ids
        return ids

    async def cancelled():
        async for _ in eng.generate("def f(x):", SamplingParams(max_tokens=50, temperature=0, ignore_eos=True)):
            break  # leaving the stream aborts the request

    async def main():
        got = await asyncio.gather(collect("hello world"), collect("a"), cancelled())
        for _ in range(500):
            if eng.get_stats().kv_cache_usage == 0.0:
                break
            await asyncio.sleep(0.01)
        return got[:2]

    try:
        got = asyncio.run(main())
        assert got == token_ids(cpu_llm.generate(["hello world", "a"], sp))
        assert eng.get_stats().kv_cache_usage == 0.0
    finally:
        eng.shutdown()
