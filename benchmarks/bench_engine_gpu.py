"""The whole engine on one GPU (issue 8): batch-1 decode against the memory roofline, batched
throughput, start-up time and GPU memory, for random-weight Llama-3.2-1B and Llama-3.1-8B shapes in
bf16, q8_0 and q4_0 (quantized on load).

    python -m hearth.benchmarks.bench_engine_gpu [--shapes llama-3.2-1b llama-3.1-8b] [--formats bf16 q8_0 q4_0]
                                          [--throughput 64 256] [--quick]

Phases, in one process (the defaults are sized to finish within ~9 minutes on an H200):

1. Ceilings: device-to-device copy bandwidth (`copy_Bps`: bytes read + written per second of a
   large `dst[...] = src`, CUDA events) and the bf16 GEMM rate (`gemm_bf16`, ops/s), both from
   benchmarks/bench_gpu.py's `ceilings()`.
2. Per shape, a random checkpoint (hearth.benchmarks.common.tiled_random_checkpoint, in a temporary
   directory deleted afterwards); per format, one engine (LLM(device="cuda", ...)), whose
   construction wall time (load, quantize, KV sizing, graph capture) is the start-up time.
3. Batch-1 decode: a random `--prompt-len` prompt is prefilled in one step, then every decode
   step is timed until `--tokens` tokens (greedy, ignore_eos) are out. Time per token = the
   decode phase's wall time / its steps (whole EngineCore steps: scheduling, inputs, graph
   replay, sampling; no detokenization), median over `--repeats` prompts. A step must read every
   weight once and the KV cache of its context (prompt + half the output, the run's mean) once,
   so bytes per token = weight bytes (counted from the loaded model: every matrix, norm and the
   output head; quantized matrices as their packed quants + scales) + KV bytes, roofline time =
   those bytes / copy bandwidth, and "of roofline" (the row's `fraction`) = roofline time /
   measured time. The weights-only figure of earlier versions is kept as
   `fraction_of_weight_roofline`. FLOPs per token = 2 x the matrices' parameters (counts.Dims).
4. Throughput (bf16, `--throughput-shape`): `c` requests of random `--tp-prompt-len` prompts and
   `--tp-output-len` output tokens each (ignore_eos, temperature 1), all submitted at once
   through LLM.generate; output tok/s and (prompt + output) tok/s over the wall time.
5. Memory after each configuration's runs: the driver's used bytes (CuPy's pools keep freed
   blocks, so this is the peak), CuPy's pool, the graph pool, weights and KV cache. Then the
   engine is dropped and the pools emptied before the next one is built.

Every engine gets the same settings (--max-num-seqs, --max-num-batched-tokens, and max_model_len
just long enough for the runs), so start-up times compare like with like.

Rows are in the one result schema (benchmarks/schema.py; suite "engine", backend "cuda", device
and machine the GPU's name): "decode" (batch 1), "throughput" (batch = concurrent requests) and
"startup" (no batch; the memory figures in `extra`). At the end they are written together to one
file per run, benchmarks/results/engine-<date>-<commit>[-quick].jsonl (unless --no-record), and a
markdown table for the README is printed. Checkpoints are written under $TMPDIR (16 GB for the 8B
shape).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hearth.benchmarks import counts, schema
from hearth.benchmarks.common import commit, load_shape, tiled_random_checkpoint
from hearth import LLM, SamplingParams

SHAPES = ("llama-3.2-1b", "llama-3.1-8b")
FORMATS = ("bf16", "q8_0", "q4_0")
THROUGHPUT = (64, 256)
GiB = float(1 << 30)
# issue 8's targets on an H200: tokens/s of batch-1 decode, output tokens/s of the throughput run
DECODE_TARGETS = {("llama-3.1-8b", "bf16"): 230.0, ("llama-3.1-8b", "q4_0"): 600.0, ("llama-3.2-1b", "bf16"): 1000.0}
THROUGHPUT_TARGETS = {("llama-3.1-8b", 256): 8000.0}


@dataclass
class Plan:
    """What to run and at which sizes (the defaults are the full H200 run)."""

    shapes: list[str] = field(default_factory=lambda: list(SHAPES))
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    throughput: list[int] = field(default_factory=lambda: list(THROUGHPUT))
    throughput_shape: str | None = None  # None: llama-3.1-8b if among `shapes`, else the last shape
    prompt_len: int = 128
    decode_tokens: int = 128
    repeats: int = 3
    tp_prompt_len: int = 1024
    tp_output_len: int = 256
    tp_temperature: float = 1.0
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_memory_fraction: float = 0.9
    enforce_eager: bool = False
    save: bool = True
    results_dir: Path | None = None  # None: hearth.benchmarks.schema.default_results_dir() (benchmarks/results)
    quick: bool = False  # marks the results file name (-quick)

    def tp_shape(self) -> str | None:
        if not self.throughput:
            return None
        if self.throughput_shape is not None:
            return self.throughput_shape
        return "llama-3.1-8b" if "llama-3.1-8b" in self.shapes else self.shapes[-1]

    def max_model_len(self) -> int:
        """Room for the longest request of either phase, in whole 64-token steps (the decode
        graphs' block tables are max_model_len / block_size wide, so no more than needed)."""
        need = max(self.prompt_len + self.decode_tokens, self.tp_prompt_len + self.tp_output_len)
        return -(-need // 64) * 64


def quick(plan: Plan) -> Plan:
    """A sanity run: few tokens, one repeat, short throughput requests."""
    return replace(plan, decode_tokens=32, repeats=1, tp_prompt_len=128, tp_output_len=32, quick=True)


class CudaGpu:
    """The real device through CuPy: ceilings, pool figures, and emptying the pools."""

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        self.name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def ceilings(self) -> dict:
        from hearth.benchmarks.bench_gpu import Device, ceilings

        out = ceilings(Device())
        self.release()
        return out

    def engine_device(self) -> Any:
        return None  # LLM opens the CuPy device itself

    def pool_bytes(self, device: Any) -> dict:
        pool = self.cupy.get_default_memory_pool()
        out = {"pool_held_GiB": pool.total_bytes() / GiB, "pool_in_use_GiB": pool.used_bytes() / GiB}
        graph_pool = getattr(device, "graph_pool", None)
        if graph_pool is not None:
            out["graph_pool_GiB"] = graph_pool.total_bytes() / GiB
        return out

    def release(self) -> float:
        """Empty CuPy's pools (after the engine is gone); returns the device's used GiB after."""
        gc.collect()
        self.cupy.get_default_memory_pool().free_all_blocks()
        self.cupy.get_default_pinned_memory_pool().free_all_blocks()
        free, total = self.cupy.cuda.runtime.memGetInfo()
        return (total - free) / GiB


# ------------------------------------------------------------------ byte counts

def array_bytes(a: Any) -> int:
    """Device bytes of a weight: a dense array, or a PackedWeight (quants + scales)."""
    if hasattr(a, "qs") and hasattr(a, "scales"):
        return int(a.qs.nbytes) + int(a.scales.nbytes)
    return int(a.nbytes)


def weight_bytes_per_token(model: Any) -> int:
    """Bytes of weights one decode step reads: every layer's matrices, norms and biases, the final
    norm and the output head (of the embedding only one row: not counted)."""
    total = array_bytes(model.lm_head) + array_bytes(model.norm)
    for layer in model.layers:
        total += sum(array_bytes(a) for a in vars(layer).values() if a is not None)
    return total


def resident_weight_bytes(model: Any) -> int:
    """Bytes the model keeps on the device: all weights (a tied head once) and the rope tables."""
    seen = {id(model.embed): model.embed, id(model.lm_head): model.lm_head, id(model.norm): model.norm,
            id(model.cos): model.cos, id(model.sin): model.sin}
    for layer in model.layers:
        seen |= {id(a): a for a in vars(layer).values() if a is not None}
    return sum(array_bytes(a) for a in seen.values())


def kv_bytes_per_token(llm: LLM, context: int) -> int:
    """KV cache bytes one decode step reads at `context` tokens (all layers' K and V)."""
    c, backend = llm.config.model, llm.engine.runner.backend
    return context * c.num_hidden_layers * backend.kv_block_bytes(1, c.num_key_value_heads, c.head_dim)


# ------------------------------------------------------------------ phases

@dataclass
class Run:
    """What every row of one run shares: the device, the measured ceilings (bytes/s and ops/s, as
    bench_gpu.ceilings() returns them), the commit and the engine settings (in each row's extra)."""

    device: str
    ceilings: dict[str, float]
    commit: str
    settings: dict

    @property
    def gemm(self) -> str:
        """The GEMM ceiling's key (`gemm_bf16`, or `gemm_fp16` on a CuPy without bf16)."""
        return next(k for k in self.ceilings if k.startswith("gemm"))

    def row(self, name: str, *, shape: dict, dtype: str, batch: int | None, times: list[float],
            extra: dict, nbytes: int | None = None, flops: int | None = None) -> schema.Result:
        """One result row; rows with counted bytes get the ceilings and their roofline fraction."""
        bound = nbytes is not None or flops is not None
        return schema.make(name, suite="engine", backend="cuda", device=self.device, shape=shape, dtype=dtype,
                           batch=batch, times=times, nbytes=nbytes, flops=flops,
                           ceilings=self.ceilings if bound else None, memory="copy_Bps" if bound else None,
                           compute=self.gemm if bound else None, machine=self.device, commit=self.commit,
                           extra={**self.settings, **extra})


def bench_decode(llm: LLM, shape: str, fmt: str, plan: Plan, ctx: Run, dims: counts.Dims) -> schema.Result:
    """Batch-1 decode tokens/s and its fraction of the copy-bandwidth roofline."""
    core, vocab = llm.engine, llm.config.model.vocab_size
    context = plan.prompt_len + plan.decode_tokens // 2
    weights = weight_bytes_per_token(llm.engine.runner.model)
    kv = kv_bytes_per_token(llm, context)
    params = SamplingParams(max_tokens=plan.decode_tokens, temperature=0, ignore_eos=True)
    # warm-up: the first prefill and replay of this engine
    llm.generate({"prompt_token_ids": _random_prompt(vocab, plan.prompt_len, 10**6)}, params.clone(max_tokens=4))
    per_token, steps, prefills = [], [], []
    for r in range(plan.repeats):
        core.add_request(f"decode-{r}", _random_prompt(vocab, plan.prompt_len, r), params)
        t0 = time.perf_counter()
        core.step()  # the prompt in one step: the first token
        t1 = time.perf_counter()
        times = []
        while core.has_unfinished:
            t = time.perf_counter()
            core.step()
            times.append(time.perf_counter() - t)
        per_token.append((time.perf_counter() - t1) / len(times))
        prefills.append(t1 - t0)
        steps += times
    t = statistics.median(per_token)
    # The ceiling is a device-to-device copy's rate counting bytes read + written, while a decode
    # step's bytes are almost all reads (weights, KV): like earlier versions of this module, the
    # read bytes are compared against that read + write rate as they are.
    copy = ctx.ceilings["copy_Bps"]
    roofline_s, weight_roofline_s = (weights + kv) / copy, weights / copy
    target = DECODE_TARGETS.get((shape, fmt))
    extra = {"tokens_per_s": 1 / t, "target_tokens_per_s": target,
             "meets_target": None if target is None else 1 / t >= target,
             "weight_bytes_per_token": weights, "kv_bytes_per_token": kv, "roofline_s": roofline_s,
             "weight_roofline_s": weight_roofline_s, "fraction_of_weight_roofline": weight_roofline_s / t,
             "prefill_s": statistics.median(prefills), "decode_tokens": plan.decode_tokens,
             "step_p10_s": float(np.percentile(steps, 10)), "step_p90_s": float(np.percentile(steps, 90)),
             "per_repeat_tokens_per_s": [1 / x for x in per_token]}
    row = ctx.row("decode", shape={"model": shape, "prompt": plan.prompt_len, "context": context}, dtype=fmt,
                  batch=1, times=per_token, nbytes=weights + kv, flops=2 * dims.matmul_params(), extra=extra)
    print(f"{shape} {fmt} decode: {1 / t:8.1f} tok/s ({t * 1e3:.2f} ms/token, p10 {extra['step_p10_s'] * 1e3:.2f} "
          f"p90 {extra['step_p90_s'] * 1e3:.2f}); {weights / 1e9:.3f} GB weights + {kv / 1e9:.3f} GB KV/token -> "
          f"{row.gbps:.0f} GB/s = {row.fraction:.2f} of roofline ({weight_roofline_s / t:.2f} weights only); "
          f"prefill {plan.prompt_len} tokens {extra['prefill_s'] * 1e3:.1f} ms{_versus(1 / t, target)}", flush=True)
    return row


def bench_throughput(llm: LLM, shape: str, plan: Plan, ctx: Run) -> list[schema.Result]:
    """Output and total tokens/s of `c` requests submitted at once, for each c in plan.throughput."""
    vocab, rows = llm.config.model.vocab_size, []
    params = SamplingParams(max_tokens=plan.tp_output_len, temperature=plan.tp_temperature, ignore_eos=True)
    # warm-up: a few full-length prompts compile the prefill and mixed step shapes
    llm.generate([{"prompt_token_ids": _random_prompt(vocab, plan.tp_prompt_len, 10**6 + i)}
                  for i in range(min(4, max(plan.throughput)))], params.clone(max_tokens=4))
    for c in plan.throughput:
        prompts = [{"prompt_token_ids": _random_prompt(vocab, plan.tp_prompt_len, 10**5 * c + i)} for i in range(c)]
        preempted = llm.get_stats().num_preemptions
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params)
        wall = time.perf_counter() - t0
        generated = sum(len(o.outputs[0].token_ids) for o in outs)
        if generated != c * plan.tp_output_len:
            raise RuntimeError(f"throughput run produced {generated} tokens, expected {c * plan.tp_output_len}")
        total = generated + c * plan.tp_prompt_len
        target = THROUGHPUT_TARGETS.get((shape, c))
        # tokens_per_s: the output rate, the figure benchmarks/report.py's engine table shows
        extra = {"tokens_per_s": generated / wall, "output_tokens_per_s": generated / wall,
                 "total_tokens_per_s": total / wall, "target_output_tokens_per_s": target,
                 "meets_target": None if target is None else generated / wall >= target,
                 "output_tokens": generated, "prompt_tokens": c * plan.tp_prompt_len,
                 "preemptions": llm.get_stats().num_preemptions - preempted}
        rows.append(ctx.row("throughput", shape={"model": shape, "prompt": plan.tp_prompt_len,
                                                 "output": plan.tp_output_len},
                            dtype="bf16", batch=c, times=[wall], extra=extra))
        print(f"{shape} bf16 throughput c={c}: {generated / wall:8.0f} output tok/s, {total / wall:8.0f} total tok/s "
              f"({wall:.1f} s, {extra['preemptions']} preemptions){_versus(generated / wall, target)}", flush=True)
    return rows


def memory_figures(llm: LLM, gpu: Any) -> dict:
    """GPU memory of a live engine (after its runs: the pools then hold their peak)."""
    runner = llm.engine.runner
    device = runner.backend.device
    free, total = device.memory_info()
    kv = sum(int(k.nbytes) + int(v.nbytes) for k, v in runner.kv_caches)
    return {"gpu_total_GiB": total / GiB, "gpu_used_GiB": (total - free) / GiB,
            "weights_GiB": resident_weight_bytes(runner.model) / GiB, "kv_cache_GiB": kv / GiB,
            "kv_cache_tokens": llm.config.cache.num_blocks * llm.config.cache.block_size,
            **gpu.pool_bytes(device)}


def bench_config(path: Path, shape: str, fmt: str, plan: Plan, gpu: Any, ctx: Run,
                 decode: bool, throughput: bool) -> list[schema.Result]:
    """Build one engine, run its phases, record its start-up time and memory. The engine lives
    only in this frame, so it is gone when this returns."""
    dims = counts.Dims.from_config(json.loads((path / "config.json").read_text()))
    t0 = time.perf_counter()
    llm = LLM(str(path), device="cuda", dtype="bfloat16", quantization=None if fmt == "bf16" else fmt,
              gpu_memory_fraction=plan.gpu_memory_fraction, enforce_eager=plan.enforce_eager,
              max_num_seqs=plan.max_num_seqs, max_num_batched_tokens=plan.max_num_batched_tokens,
              max_model_len=plan.max_model_len(), cuda_device=gpu.engine_device())
    startup = time.perf_counter() - t0
    print(f"{shape} {fmt}: ready in {startup:.1f} s", flush=True)
    rows = [bench_decode(llm, shape, fmt, plan, ctx, dims)] if decode else []
    if throughput:
        rows += bench_throughput(llm, shape, plan, ctx)
    mem = memory_figures(llm, gpu)
    rows.append(ctx.row("startup", shape={"model": shape}, dtype=fmt, batch=None, times=[startup],
                        extra={**mem, "weight_bytes_per_token": weight_bytes_per_token(llm.engine.runner.model)}))
    print(f"{shape} {fmt} memory: {mem['gpu_used_GiB']:.1f} of {mem['gpu_total_GiB']:.1f} GiB used; weights "
          f"{mem['weights_GiB']:.2f} GiB, KV cache {mem['kv_cache_GiB']:.1f} GiB ({mem['kv_cache_tokens']} tokens)"
          + "".join(f", {k.removesuffix('_GiB').replace('_', ' ')} {v:.2f} GiB"
                    for k, v in mem.items() if k.startswith(("pool", "graph"))), flush=True)
    return rows


def run(plan: Plan, gpu: Any) -> list[schema.Result]:
    """Every phase of the plan; returns the rows (also printed as a markdown table, and written to
    one results file unless plan.save is off). Raises at the end, after the table and the file,
    if a configuration failed (the others still run)."""
    ceil = gpu.ceilings()
    settings = {"max_num_seqs": plan.max_num_seqs, "max_num_batched_tokens": plan.max_num_batched_tokens,
                "max_model_len": plan.max_model_len(), "cuda_graphs": not plan.enforce_eager}
    ctx = Run(device=gpu.name, ceilings=ceil, commit=commit(), settings=settings)
    print(f"{gpu.name}: copy {ceil['copy_Bps'] / 1e9:.0f} GB/s (read + write), GEMM {ceil[ctx.gemm] / 1e12:.0f} "
          f"TFLOP/s ({ctx.gemm})", flush=True)
    tp_shape, rows, failures = plan.tp_shape(), [], []
    try:
        for shape in dict.fromkeys(plan.shapes + ([tp_shape] if tp_shape else [])):
            name = load_shape(shape)[0]
            formats = [f for f in plan.formats if shape in plan.shapes]
            if shape == tp_shape and "bf16" not in formats:
                formats.insert(0, "bf16")
            with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
                t0 = time.perf_counter()
                path = tiled_random_checkpoint(shape, Path(tmp) / name)
                print(f"{name}: wrote a random checkpoint in {time.perf_counter() - t0:.1f} s", flush=True)
                for fmt in formats:
                    try:
                        rows += bench_config(path, name, fmt, plan, gpu, ctx, decode=fmt in plan.formats
                                             and shape in plan.shapes, throughput=shape == tp_shape and fmt == "bf16")
                    except Exception as exc:  # noqa: BLE001 - one configuration's failure must not lose the others
                        traceback.print_exc()
                        failures.append(f"{name} {fmt}: {type(exc).__name__}: {exc}")
                    print(f"released: {gpu.release():.2f} GiB still in use on the device", flush=True)
        print("\n" + markdown_table(rows), flush=True)
    finally:  # what was measured is kept, even when the run is cut short
        if plan.save and rows:
            print(f"results: {save(rows, plan)}", flush=True)
    if failures:
        raise RuntimeError("configurations failed: " + "; ".join(failures))
    return rows


def save(rows: list[schema.Result], plan: Plan) -> Path:
    """All of a run's rows in one new file of plan.results_dir (default: benchmarks/results)."""
    results_dir = plan.results_dir
    if results_dir is None:
        results_dir = schema.default_results_dir()
    return schema.write(rows, schema.run_file(Path(results_dir), "engine", commit(), plan.quick))


# ------------------------------------------------------------------ report

def markdown_table(rows: list[schema.Result]) -> str:
    """The README tables: decode + start-up + memory per configuration, then throughput."""
    if not rows:
        return "(no results)"
    nan = float("nan")
    startup = {(r.shape["model"], r.dtype): r for r in rows if r.name == "startup"}
    copy = next((r.ceilings["copy_GB/s"] for r in rows if "copy_GB/s" in r.ceilings), nan)
    head = f"GPU: {rows[0].device}; copy bandwidth (ceiling) {copy:.0f} GB/s; {rows[0].date}"
    columns = ("model", "weights", "batch-1 decode tok/s", "ms/token", "GB/s", "of roofline", "target", "start-up s",
               "GPU memory used GiB (weights, KV cache)")
    lines = [head, "", "| " + " | ".join(columns) + " |", "|---|---|---:|---:|---:|---:|---|---:|---|"]
    for r in (r for r in rows if r.name == "decode"):
        s = startup.get((r.shape["model"], r.dtype))
        mem = s.extra if s is not None else {}
        memory = (f"{mem.get('gpu_used_GiB', nan):.1f} ({mem.get('weights_GiB', nan):.1f}, "
                  f"{mem.get('kv_cache_GiB', nan):.1f})")
        cells = [r.shape["model"], r.dtype, f"{r.extra['tokens_per_s']:.0f}", f"{r.median_s * 1e3:.2f}",
                 f"{r.gbps:.0f}", f"{r.fraction:.2f}",
                 _target_cell(r.extra["target_tokens_per_s"], r.extra["meets_target"]),
                 f"{s.median_s if s is not None else nan:.1f}", memory]
        lines.append("| " + " | ".join(cells) + " |")
    tp = [r for r in rows if r.name == "throughput"]
    if tp:
        lines += ["", "| model | concurrent requests | prompt / output tokens | output tok/s | total tok/s | target |",
                  "|---|---:|---|---:|---:|---|"]
    for r in tp:
        cells = [f"{r.shape['model']} bf16", str(r.batch), f"{r.shape['prompt']} / {r.shape['output']}",
                 f"{r.extra['output_tokens_per_s']:.0f}", f"{r.extra['total_tokens_per_s']:.0f}",
                 _target_cell(r.extra["target_output_tokens_per_s"], r.extra["meets_target"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _target_cell(target: float | None, met: bool | None) -> str:
    return "" if target is None else f">= {target:.0f} {'met' if met else 'MISSED'}"


def _versus(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"  [target >= {target:.0f}: {'met' if value >= target else 'MISSED'}]"


def _random_prompt(vocab: int, n: int, seed: int) -> list[int]:
    # distinct random ids per request: the prefix cache never serves one request from another
    return np.random.default_rng(seed).integers(3, vocab, n).tolist()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows the module docstring as written and every flag's default."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES),
                    help="model shapes: names in benchmarks/model_shapes or paths to a config .json")
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS,
                    help="weight formats of the batch-1 decode runs (q8_0/q4_0: quantized on load)")
    ap.add_argument("--throughput", nargs="*", type=int, default=list(THROUGHPUT),
                    help="concurrent request counts of the bf16 throughput runs (none: skip them)")
    ap.add_argument("--throughput-shape", default=None,
                    help="shape of the throughput runs (default: llama-3.1-8b if in --shapes, else the last)")
    ap.add_argument("--quick", action="store_true",
                    help="a sanity run (overrides --tokens, --repeats, --tp-*): 32 decode tokens, 1 repeat, "
                    "throughput requests of 128 + 32 tokens")
    ap.add_argument("--prompt-len", type=int, default=128, help="prompt tokens before the timed decode steps")
    ap.add_argument("--tokens", type=int, default=128, help="tokens generated per batch-1 decode repeat")
    ap.add_argument("--repeats", type=int, default=3, help="batch-1 decode repeats (the median is reported)")
    ap.add_argument("--tp-prompt-len", type=int, default=1024, help="prompt tokens of each throughput request")
    ap.add_argument("--tp-output-len", type=int, default=256, help="output tokens of each throughput request")
    ap.add_argument("--max-num-seqs", type=int, default=256, help="engine max_num_seqs (every configuration)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=8192, help="engine token budget per step")
    ap.add_argument("--gpu-memory-fraction", type=float, default=0.9, help="engine gpu_memory_fraction")
    ap.add_argument("--eager", action="store_true", help="enforce_eager: no CUDA graphs")
    ap.add_argument("--no-record", action="store_true",
                    help="print only; write no results file (benchmarks/results/engine-*.jsonl)")
    args = ap.parse_args(argv)
    for s in args.shapes + ([args.throughput_shape] if args.throughput_shape else []):
        load_shape(s)  # a typo fails now, not after minutes of work
    if args.tokens < 2 or min(args.throughput, default=1) < 1:
        ap.error("--tokens must be >= 2 and --throughput counts >= 1")
    plan = Plan(shapes=args.shapes, formats=args.formats, throughput=args.throughput,
                throughput_shape=args.throughput_shape, prompt_len=args.prompt_len, decode_tokens=args.tokens,
                repeats=args.repeats, tp_prompt_len=args.tp_prompt_len, tp_output_len=args.tp_output_len,
                max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                gpu_memory_fraction=args.gpu_memory_fraction, enforce_eager=args.eager, save=not args.no_record)
    if args.quick:
        plan = quick(plan)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run(plan, CudaGpu())


if __name__ == "__main__":
    main()
