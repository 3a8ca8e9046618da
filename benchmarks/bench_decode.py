"""Decode speed at batch 1 on the CPU, as a fraction of the machine's read bandwidth.

A decode step must stream every weight once; on a CPU that is memory-bound, so
bytes read per step / step time, over the bandwidth of a plain threaded read of a large buffer
measured in the same process, says how close the engine runs to the hardware.

    python benchmarks/bench_decode.py [--shape qwen2.5-0.5b] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import random_checkpoint, read_bandwidth, record  # noqa: E402
from engine import LLM, SamplingParams  # noqa: E402


def weight_bytes_per_step(llm: LLM) -> int:
    """Bytes of every weight a decode step reads (all matrices, biases, norms; the lm_head once)."""
    model = llm.engine.runner.model
    total = model.lm_head.nbytes + model.norm.nbytes
    for layer in model.layers:
        total += sum(a.nbytes for a in vars(layer).values() if a is not None)
    return total


def kv_bytes_read(llm: LLM, context: int) -> int:
    c = llm.config.model
    return context * c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 4


def run(shape: str, prompt_len: int, num_tokens: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = random_checkpoint(shape, Path(tmp) / shape)
        print(f"wrote random {shape} checkpoint in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        llm = LLM(str(path), max_model_len=4096)
        core = llm.engine
        # warm-up: the first touch of each mapped weight page is a page fault, not decode work
        llm.generate([3, 4, 5], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
        nbytes = weight_bytes_per_step(llm) + kv_bytes_read(llm, prompt_len + num_tokens // 2)
        # The machine is shared and its bandwidth drifts: pair each repeat's decode steps with a
        # probe measured right before them and report the median of the per-repeat ratios.
        step_times, ratios, probes = [], [], []
        for r in range(repeats):
            probes.append(read_bandwidth(repeats=3))
            params = SamplingParams(max_tokens=num_tokens, temperature=0, ignore_eos=True)
            core.add_request(f"bench-{r}", list(range(3, 3 + prompt_len)), params.clone(_eos_token_ids=()))
            core.step()  # prefill
            times = []
            while core.has_unfinished:
                t = time.perf_counter()
                core.step()
                times.append(time.perf_counter() - t)
            step_times += times
            ratios.append(nbytes / statistics.median(times) / probes[-1])
        step = statistics.median(step_times)
        spread = statistics.quantiles(step_times, n=10)
        frac, bandwidth = statistics.median(ratios), statistics.median(probes)
        row = record("decode_batch1", backend="cpu", shape={"model": shape, "prompt": prompt_len, "tokens": num_tokens},
                     dtype="bf16 weights, fp32 compute", median_s=step, gbps=nbytes / step / 1e9,
                     pct_of_ceiling=100 * frac,
                     extra={"tokens_per_s": 1 / step, "probe_GB/s": bandwidth / 1e9, "bytes_per_step": nbytes,
                            "p10_s": spread[0], "p90_s": spread[-1], "paired_ratios": ratios})
        print(f"{shape}: {1 / step:.2f} tok/s, step {step * 1e3:.1f} ms (p10 {spread[0] * 1e3:.1f}, "
              f"p90 {spread[-1] * 1e3:.1f}), {nbytes / 1e9:.3f} GB/step -> {nbytes / step / 1e9:.1f} GB/s; "
              f"probe {bandwidth / 1e9:.1f} GB/s; paired fraction {frac:.2f} "
              f"(per repeat {', '.join(f'{x:.2f}' for x in ratios)})")
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-0.5b", help="a config in benchmarks/model_shapes")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64, help="decode steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    run(args.shape, args.prompt_len, args.tokens, args.repeats)


if __name__ == "__main__":
    main()
