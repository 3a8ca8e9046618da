"""Continuous batching on the CPU: aggregate decode tokens/s at 1, 4, 16 and 64 concurrent
sequences, where a batched step's time goes, and the engine's own overhead per step.

Each repeat queues `c` requests with distinct 32-token prompts, lets one step prefill them all,
then times `--steps` decode steps of `c` sequences each. A separate instrumented repeat times
every backend op (matmuls, attention, the rest) and the model forward; the engine's overhead is
the step time outside the forward (scheduling, input building, sampling, bookkeeping). Matmul
rates are compared with the machine's FMA rate, measured in the same run as the peak rate of a
large fp32 GEMM (numpy's BLAS on all threads). The engine suite (`python -m hearth.benchmarks engine`)
measures tokens/s against batch size for every shape and format; this script is the diagnosis
of one shape's steps. Rows (name "decode_profile") go to benchmarks/results/ in the one schema.

    python -m hearth.benchmarks.bench_batching [--shape default|qwen2.5-0.5b] [--steps 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hearth.benchmarks import ceilings, schema
from hearth.benchmarks.common import commit, tiled_random_checkpoint
from hearth import LLM, SamplingParams

CONCURRENCY = (1, 4, 16, 64)
PROMPT_LEN = 32


def matmul_params(llm: LLM) -> int:
    """Weights multiplied per token (every projection and the lm_head)."""
    model = llm.engine.runner.model
    total = model.lm_head.size
    for layer in model.layers:
        total += sum(getattr(layer, n).size for n in ("q", "k", "v", "o", "gate", "up", "down"))
    return total


def queue_and_prefill(llm: LLM, c: int, steps: int, rng: np.random.Generator) -> None:
    core = llm.engine
    vocab = llm.config.model.vocab_size
    sp = SamplingParams(max_tokens=steps + 1, temperature=0, ignore_eos=True)
    for i in range(c):
        core.add_request(f"b{c}-{rng.integers(1 << 62)}", rng.integers(3, vocab, PROMPT_LEN).tolist(), sp)
    core.step()  # the token budget covers every prompt: one step prefills all of them
    assert len(core.scheduler.running) == c and not core.scheduler.waiting


def timed_decode(llm: LLM, c: int, steps: int, rng: np.random.Generator) -> list[float]:
    queue_and_prefill(llm, c, steps, rng)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        llm.engine.step()
        times.append(time.perf_counter() - t)
    while llm.engine.has_unfinished:
        llm.engine.step()
    return times


def profile_decode(llm: LLM, c: int, steps: int, rng: np.random.Generator) -> dict[str, float]:
    """Seconds per decode step in each backend op, the forward, and the whole step."""
    backend, model = llm.engine.runner.backend, llm.engine.runner.model
    spent: dict[str, float] = defaultdict(float)
    originals = {}

    def wrap(owner, name, label):
        fn = getattr(owner, name)
        originals[(owner, name)] = fn

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t
        setattr(owner, name, timed)

    for op in ("linear", "paged_attention", "reshape_and_cache", "rope", "rms_norm", "add_rms_norm",
               "silu_and_mul", "embedding"):
        wrap(backend, op, op)
    wrap(model, "forward", "forward")
    queue_and_prefill(llm, c, steps, rng)
    spent.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        llm.engine.step()
    total = time.perf_counter() - t0
    for (owner, name) in originals:
        delattr(owner, name)  # back to the class's method
    while llm.engine.has_unfinished:
        llm.engine.step()
    return {k: v / steps for k, v in {**spent, "step": total}.items()}


def run(shape: str, steps: int, repeats: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = None if shape == "default" else str(tiled_random_checkpoint(shape, Path(tmp) / shape))
        llm = LLM(path, max_model_len=512, max_num_seqs=64, max_num_batched_tokens=64 * PROMPT_LEN,
                  enable_prefix_caching=False, kv_cache_memory=1 << 30)
        rng = np.random.default_rng(0)
        timed_decode(llm, 4, 4, rng)  # warm-up: page in the weights
        fma, flops_per_token = ceilings.gemm_fp32_rate(), 2 * matmul_params(llm)
        device = ceilings.cpu_name()
        rows, base = [], None
        for c in CONCURRENCY:
            times = [t for _ in range(repeats) for t in timed_decode(llm, c, steps, rng)]
            step = statistics.median(times)
            prof = profile_decode(llm, c, steps, rng)
            rate = c / step
            base = base or rate
            mm = prof["linear"]
            others = sum(v for k, v in prof.items() if k not in ("linear", "paged_attention", "forward", "step"))
            overhead = max(0.0, prof["step"] - prof["forward"]) / prof["step"]
            rows.append(schema.make(
                "decode_profile", suite="engine", backend="cpu", device=device, machine=device, commit=commit(),
                shape={"model": shape, "prompt": PROMPT_LEN}, dtype="as stored", batch=c, times=times,
                flops=c * flops_per_token, ceilings={"gemm_fp32": fma}, compute="gemm_fp32",
                extra={"tokens_per_s": rate, "speedup_vs_1": rate / base,
                       "matmul_fraction_of_gemm": c * flops_per_token / mm / fma,
                       "matmul_share": mm / prof["step"], "attention_share": prof["paged_attention"] / prof["step"],
                       "other_ops_share": others / prof["step"], "engine_overhead_share": overhead}))
            print(f"{shape} c={c:3d}: {rate:8.1f} tok/s ({rate / base:4.1f}x c=1), step {step * 1e3:7.2f} ms | "
                  f"matmul {100 * mm / prof['step']:4.1f}% at {c * flops_per_token / mm / 1e9:6.1f} GFLOP/s "
                  f"({100 * c * flops_per_token / mm / fma:4.1f}% of {fma / 1e9:.0f} GEMM), "
                  f"attention {100 * prof['paged_attention'] / prof['step']:4.1f}%, other ops "
                  f"{100 * others / prof['step']:4.1f}%, engine overhead {100 * overhead:4.1f}%", flush=True)
        return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="default", help="'default' (the bundled model) or a config in benchmarks/model_shapes")
    ap.add_argument("--steps", type=int, default=16, help="decode steps timed per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = run(args.shape, args.steps, args.repeats)
    print(schema.write(rows, schema.run_file(schema.default_results_dir(), "engine", commit())))


if __name__ == "__main__":
    main()
