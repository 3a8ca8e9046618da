"""Decode and prefill speed on the CPU, in bf16 and the quantized formats, against ceilings
measured in the same run.

Decode (batch 1) must stream every weight once per token, so bytes read per step / step time,
over the bandwidth of a plain threaded read of a large buffer, says how close the engine runs to
the memory roofline. Prefill of a long prompt is compute-bound: its matrix work in GOP/s is set
against the peak integer dot-product rate (quantized weights: the kernels quantize activations to
int8) measured by `kernels.cpu.int8_dot_probe`.

    python benchmarks/bench_decode.py --shape qwen2.5-0.5b tinyllama-1.1b --quantization bf16 q8_0 q4_0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import int8_dot_rate, random_checkpoint, read_bandwidth, record  # noqa: E402
from engine import LLM, SamplingParams  # noqa: E402

FORMATS = ("bf16", "q8_0", "q4_0")


def weight_bytes_per_step(llm: LLM) -> int:
    """Bytes of every weight a decode step reads (all matrices, biases, norms; the lm_head once;
    of the embedding only one row, which is negligible and not counted)."""
    model = llm.engine.runner.model
    total = model.lm_head.nbytes + model.norm.nbytes
    for layer in model.layers:
        total += sum(a.nbytes for a in vars(layer).values() if a is not None)
    return total


def prefill_matmul_ops(llm: LLM, prompt_len: int) -> int:
    """2 * multiply-adds of the weight matrices in prefilling one prompt: every layer's for every
    token, the output head's for the last token only (the only one whose logits are needed)."""
    c = llm.config.model
    q, kv, h, inter = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.hidden_size, \
        c.intermediate_size
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * inter
    return 2 * (prompt_len * c.num_hidden_layers * per_layer + c.vocab_size * h)


def kv_bytes_read(llm: LLM, context: int) -> int:
    c = llm.config.model
    return context * c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 4


def _prompt(r: int, n: int) -> list[int]:
    # a different first token per repeat: the prefix cache must not serve a repeat's prompt
    return [3 + r] + list(range(100, 100 + n - 1))


def bench_decode(llm: LLM, label: str, shape: str, prompt_len: int, num_tokens: int, repeats: int) -> dict:
    core = llm.engine
    nbytes = weight_bytes_per_step(llm) + kv_bytes_read(llm, prompt_len + num_tokens // 2)
    # The machine is shared and its bandwidth drifts: pair each repeat's decode steps with a
    # probe measured right before them and report the median of the per-repeat ratios.
    step_times, ratios, probes = [], [], []
    for r in range(repeats):
        probes.append(read_bandwidth(repeats=3))
        params = SamplingParams(max_tokens=num_tokens, temperature=0, ignore_eos=True)
        core.add_request(f"decode-{r}", _prompt(r, prompt_len), params.clone(_eos_token_ids=()))
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
                 dtype=label, median_s=step, gbps=nbytes / step / 1e9, pct_of_ceiling=100 * frac,
                 extra={"tokens_per_s": 1 / step, "probe_GB/s": bandwidth / 1e9, "bytes_per_step": nbytes,
                        "p10_s": spread[0], "p90_s": spread[-1], "paired_ratios": ratios})
    print(f"{shape} {label} decode: {1 / step:.2f} tok/s, step {step * 1e3:.1f} ms (p10 {spread[0] * 1e3:.1f}, "
          f"p90 {spread[-1] * 1e3:.1f}), {nbytes / 1e9:.3f} GB/step -> {nbytes / step / 1e9:.1f} GB/s; "
          f"probe {bandwidth / 1e9:.1f} GB/s; fraction of roofline {frac:.2f} "
          f"(per repeat {', '.join(f'{x:.2f}' for x in ratios)})", flush=True)
    return row


def bench_prefill(llm: LLM, label: str, shape: str, prompt_len: int, repeats: int) -> dict:
    """One prompt of `prompt_len` tokens prefilled in a single engine step, timed per repeat and
    paired with an int8 peak-rate probe run right before it (the ceiling of the quantized
    formats; bf16 weights run fp32 FMAs, for which no ceiling is claimed)."""
    core = llm.engine
    ops = prefill_matmul_ops(llm, prompt_len)
    times, peaks = [], []
    for r in range(repeats):
        peaks.append(int8_dot_rate())
        params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
        core.add_request(f"prefill-{r}", _prompt(r, prompt_len), params.clone(_eos_token_ids=()))
        t = time.perf_counter()
        core.step()  # the whole prompt in one step (max_num_batched_tokens >= prompt_len)
        times.append(time.perf_counter() - t)
        while core.has_unfinished:
            core.step()
    step, peak = statistics.median(times), statistics.median(peaks)
    gops = ops / step / 1e9
    quantized = llm.config.quantization is not None
    frac = statistics.median(ops / t / p for t, p in zip(times, peaks, strict=True)) if quantized else None
    row = record("prefill", backend="cpu", shape={"model": shape, "prompt": prompt_len}, dtype=label,
                 median_s=step, tflops=gops / 1e3, pct_of_ceiling=None if frac is None else 100 * frac,
                 extra={"tokens_per_s": prompt_len / step, "matmul_GOP/s": gops, "int8_peak_GOP/s": peak / 1e9,
                        "spread_s": max(times) - min(times), "ceiling": "int8 dot-product peak (int8_dot_probe)"})
    versus = "" if frac is None else f" = {frac:.2f} of the int8 peak {peak / 1e9:.0f} GOP/s"
    print(f"{shape} {label} prefill {prompt_len}: {prompt_len / step:.0f} tok/s, {step * 1e3:.0f} ms; "
          f"matmuls {gops:.0f} GOP/s{versus}", flush=True)
    return row


def run(shape: str, formats: list[str], prompt_len: int, prefill_len: int, num_tokens: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = random_checkpoint(shape, Path(tmp) / shape)
        print(f"wrote random {shape} checkpoint in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for fmt in formats:
            t0 = time.perf_counter()
            llm = LLM(str(path), quantization=None if fmt == "bf16" else fmt,
                      max_model_len=max(prefill_len, prompt_len + num_tokens) + 16,
                      max_num_batched_tokens=max(prefill_len, 2048))
            print(f"loaded {shape} as {fmt} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            label = "bf16 weights, fp32 compute" if fmt == "bf16" else f"{fmt} weights, int8 activations"
            # warm-up: the first touch of each mapped weight page is a page fault, not decode work
            llm.generate([3, 4, 5], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
            bench_decode(llm, label, shape, prompt_len, num_tokens, repeats)
            if prefill_len:
                bench_prefill(llm, label, shape, prefill_len, repeats)
            del llm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", nargs="+", default=["qwen2.5-0.5b"], help="configs in benchmarks/model_shapes")
    ap.add_argument("--quantization", nargs="+", default=["bf16"], choices=FORMATS)
    ap.add_argument("--prompt-len", type=int, default=32, help="context before the timed decode steps")
    ap.add_argument("--prefill-len", type=int, default=512, help="prompt length of the prefill case (0: skip)")
    ap.add_argument("--tokens", type=int, default=64, help="decode steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for shape in args.shape:
        run(shape, args.quantization, args.prompt_len, args.prefill_len, args.tokens, args.repeats)


if __name__ == "__main__":
    main()
