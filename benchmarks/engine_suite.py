"""The engine suite: hearth's offline engine on the CPU, with random weights in the shapes of real
models (benchmarks/model_shapes), in bf16 and the quantized formats.

Two kinds of case per shape and format:
  decode   B requests prefilled together, then `--steps` decode steps of all B timed per repeat;
           the unit of work is one decode step (B tokens).
  prefill  one prompt of `--prefill-len` tokens in one engine step.

Each row carries the bytes and FLOPs the step must move and do (counted from the shape by
benchmarks/counts.py, not read from the engine) and the fraction of the machine's ceilings that
this is. The compute ceilings are measured at the start and the end of the run; the memory ones
also right before and after each case, as in the kernel suite (this kind of host's bandwidth
moves by half within minutes), and a case is judged on the best of all of these it saw.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hearth.benchmarks import ceilings, common, counts, schema

SHAPES = ("qwen2.5-0.5b", "qwen3-0.6b", "tinyllama-1.1b", "llama-3.2-1b")
FORMATS = ("bf16", "q8_0", "q4_0")
# (full run, --quick) values of the flags the user did not give
DEFAULTS = {"shape": (list(SHAPES), ["qwen2.5-0.5b"]), "format": (list(FORMATS), ["bf16", "q8_0"]),
            "batch": ([1, 4, 16, 64], [1, 4, 16]), "prompt_len": (32, 32), "prefill_len": (512, 64),
            "steps": (16, 4), "repeats": (5, 3)}
# What the CPU engine holds besides the weight matrices: norms and biases widened to fp32 on load
# (LlamaForCausalLM._vector), and an fp32 KV cache (CPUBackend.kv_cache).
SMALL, KV = "f32", "f32"
BLOCK_SIZE = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's flags; each defaults to its full-run value, or its --quick value with --quick."""
    add = parser.add_argument
    add("--shape", nargs="+", help="model shapes: names in benchmarks/model_shapes or paths to a config .json "
        f"(default {' '.join(SHAPES)}; quick: qwen2.5-0.5b)")
    add("--format", nargs="+", choices=FORMATS, help="weight formats (default: all; quick: bf16 q8_0)")
    add("--batch", nargs="+", type=int, help="decode batch sizes (default 1 4 16 64; quick: 1 4 16)")
    add("--prompt-len", type=int, help="prompt tokens of each decode request (default 32)")
    add("--prefill-len", type=int, help="tokens of the prefill case's prompt (default 512; quick: 64)")
    add("--steps", type=int, help="decode steps timed per repeat (default 16; quick: 4)")
    add("--repeats", type=int, help="timed repeats of every case (default 5; quick: 3)")


def settings(args: argparse.Namespace, quick: bool) -> argparse.Namespace:
    """The flags with every value the user left out filled in (full-run or quick defaults)."""
    out = common.with_defaults(args, DEFAULTS, quick)
    for name in ("prompt_len", "prefill_len", "steps", "repeats"):
        if getattr(out, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(out, name)}")
    if min(out.batch) < 1:
        raise ValueError(f"--batch sizes must be at least 1, got {out.batch}")
    return out


@dataclass
class Case:
    """One measured case, waiting for the run's final ceilings to become a Result."""

    name: str
    shape: dict
    fmt: str
    batch: int
    times: list[float]
    work: counts.Work
    tokens: int  # tokens one unit of work produces (decode) or processes (prefill)
    memory: dict[str, float]  # the memory ceilings probed beside this case


def run(args: argparse.Namespace, quick: bool, progress: bool) -> list[schema.Result]:
    """Measure every shape x format x case the flags name; one Result per case."""
    from tqdm import tqdm

    s = settings(args, quick)
    shapes = [common.load_shape(spec) for spec in s.shape]  # fail on an unknown name before any work
    start = ceilings.cpu(quick)
    cases: list[Case] = []
    total = len(shapes) * len(s.format) * (len(s.batch) + 1)
    with tqdm(total=total, desc="engine", unit="case", file=sys.stderr, disable=not progress) as bar:
        for spec, (name, cfg) in zip(s.shape, shapes, strict=True):
            # one checkpoint on disk at a time: the 1B shapes are 2.5 GB each in bf16
            with tempfile.TemporaryDirectory(prefix="hearth-engine-suite-") as tmp:
                bar.set_postfix_str(f"{name}: writing random weights")
                path = common.tiled_random_checkpoint(spec, Path(tmp) / name)
                for fmt in s.format:
                    cases += _measure_format(path, name, cfg, fmt, s, bar)
    peaks = ceilings.best_of(start, ceilings.cpu(quick))
    machine, commit = ceilings.cpu_name(), common.commit()
    return [_result(c, peaks, machine, commit) for c in cases]


def _measure_format(path: Path, name: str, cfg: dict, fmt: str, s: argparse.Namespace, bar) -> list[Case]:
    """Every case of one model in one format: decode at each batch size, then prefill."""
    from hearth import LLM

    d = counts.Dims.from_config(cfg)
    head = "bf16" if fmt == "bf16" else _head_format()
    longest = max(s.prefill_len, s.prompt_len + s.steps) + 1  # prompt + sampled tokens of the longest request
    per_seq = -(-longest // BLOCK_SIZE)
    bar.set_postfix_str(f"{name} {fmt}: loading")
    llm = LLM(str(path), quantization=None if fmt == "bf16" else fmt, max_model_len=longest,
              max_num_seqs=max(s.batch), max_num_batched_tokens=max(s.prefill_len, max(s.batch) * s.prompt_len),
              enable_prefix_caching=False, block_size=BLOCK_SIZE, num_kv_blocks=max(s.batch) * per_seq + 1)
    ids = itertools.count()
    rng = np.random.default_rng(0)
    # warm-up: the first touch of each weight page is a page fault, not decode work
    _decode(llm, s.batch[0], s.prompt_len, 2, 1, ids, rng)
    out = []
    for batch in s.batch:
        bar.set_postfix_str(f"{name} {fmt}: decode B={batch}")
        context = s.prompt_len + (s.steps + 1) // 2  # the mean context of the timed steps, rounded
        times, memory = _probed(lambda: _decode(llm, batch, s.prompt_len, s.steps, s.repeats, ids, rng))
        out.append(Case("decode", {"model": name, "prompt": s.prompt_len, "context": context}, fmt, batch, times,
                        counts.decode_step(d, fmt, head, batch, context, KV, SMALL), batch, memory))
        bar.update()
    bar.set_postfix_str(f"{name} {fmt}: prefill {s.prefill_len}")
    times, memory = _probed(lambda: _prefill(llm, s.prefill_len, s.repeats, ids, rng))
    out.append(Case("prefill", {"model": name, "prompt": s.prefill_len}, fmt, 1, times,
                    counts.prefill(d, fmt, head, s.prefill_len, SMALL, KV), s.prefill_len, memory))
    bar.update()
    del llm
    gc.collect()  # drop this format's weights before the next format loads its own
    return out


def _probed(measure) -> tuple[list[float], dict[str, float]]:
    """measure()'s times, and the best of the memory ceilings probed right before and after it."""
    before = ceilings.cpu_memory()
    times = measure()
    return times, ceilings.best_of(before, ceilings.cpu_memory())


def _head_format() -> str:
    """The output head's format in a model quantized on load (the engine keeps it at 8 bits)."""
    from hearth.engine.model.llama import LlamaForCausalLM

    return LlamaForCausalLM.HEAD_FORMAT


def _add(llm, n: int, prompt_len: int, max_tokens: int, ids, rng: np.random.Generator) -> None:
    """Queue n requests with random prompts (distinct: nothing may be served from a cache)."""
    from hearth import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    for _ in range(n):
        prompt = rng.integers(3, llm.config.model.vocab_size, prompt_len).tolist()
        llm.engine.add_request(f"suite-{next(ids)}", prompt, params)


def _decode(llm, batch: int, prompt_len: int, steps: int, repeats: int, ids, rng) -> list[float]:
    """Seconds per decode step of `batch` sequences, one figure per repeat."""
    core, times = llm.engine, []
    preemptions = core.scheduler.num_preemptions
    for _ in range(repeats):
        _add(llm, batch, prompt_len, steps + 1, ids, rng)  # the prefill samples the first token
        core.step()  # one step prefills every prompt: the token budget covers them all
        if len(core.scheduler.running) != batch or core.scheduler.waiting:
            raise RuntimeError(f"{batch} prompts of {prompt_len} tokens did not prefill in one step")
        t0 = time.perf_counter()
        for _ in range(steps):
            core.step()
        times.append((time.perf_counter() - t0) / steps)
        _check_idle(llm)
    if core.scheduler.num_preemptions != preemptions:  # a re-prefill inside the timed steps
        raise RuntimeError(f"decode at batch {batch} was preempted: the KV cache is too small")
    return times


def _prefill(llm, prompt_len: int, repeats: int, ids, rng) -> list[float]:
    """Seconds of one engine step that prefills a `prompt_len`-token prompt, per repeat."""
    core, times = llm.engine, []
    for _ in range(repeats):
        _add(llm, 1, prompt_len, 1, ids, rng)  # one output token: the prefill step finishes it
        t0 = time.perf_counter()
        core.step()
        times.append(time.perf_counter() - t0)
        _check_idle(llm)
    return times


def _check_idle(llm) -> None:
    """Every request finished and every KV block back in the pool: the next case starts clean."""
    core = llm.engine
    if core.has_unfinished:
        raise RuntimeError("requests still unfinished after their last step")
    if core.kv_cache.num_free_blocks != core.kv_cache.pool.num_blocks:
        raise RuntimeError(f"KV blocks leaked: {core.kv_cache.num_free_blocks} of "
                           f"{core.kv_cache.pool.num_blocks} free with no request left")


def _result(c: Case, peaks: dict[str, float], machine: str, commit: str) -> schema.Result:
    # bf16 weights are widened to fp32 and run fp32 FMAs; the quantized kernels run int8 dot products
    return schema.make(c.name, suite="engine", backend="cpu", device=machine, shape=c.shape, dtype=c.fmt,
                       batch=c.batch, times=c.times, nbytes=c.work.bytes, flops=c.work.flops,
                       ceilings=ceilings.best_of(peaks, c.memory),
                       memory="read_Bps", compute="gemm_fp32" if c.fmt == "bf16" else "int8_dot",
                       machine=machine, commit=commit,
                       extra={"tokens_per_s": c.tokens / schema.spread(c.times)[0]})
