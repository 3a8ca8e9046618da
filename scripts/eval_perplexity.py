"""Held-out perplexity of the bundled model in hearth, per weight format (bf16, q8_0, q4_0).

The held-out files are the ones the training script held out (one stdlib file in twenty, by a
hash of its path); they are packed into one stream the same way and cut into non-overlapping
windows of 511 tokens (the context is 512 and one token is generated per request). Every format
is scored on the same windows, so the ratios between them are exact comparisons.

    python scripts/eval_perplexity.py                  # all windows, all three formats
    python scripts/eval_perplexity.py --max-windows 64 --formats bf16,q4_0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

from hearth import LLM, SamplingParams
# a sibling script: `python scripts/eval_perplexity.py` puts scripts/ first on sys.path
from train_default_model import is_heldout, list_sources

REPO = Path(__file__).resolve().parent.parent

WINDOW = 511


def heldout_windows(llm: LLM, stdlib: Path, max_windows: int | None) -> list[list[int]]:
    texts = [text for rel, text in list_sources(stdlib, None) if is_heldout(rel)]
    stream = np.concatenate([np.asarray(llm.tokenizer.encode(t), dtype=np.int64) for t in texts])
    windows = [stream[s:s + WINDOW].tolist() for s in range(0, len(stream) - WINDOW + 1, WINDOW)]
    return windows if max_windows is None else windows[:max_windows]


def mean_loss(llm: LLM, windows: list[list[int]], chunk: int = 32) -> float:
    """Mean next-token loss (nats) over every position after the first of each window."""
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
    total, count = 0.0, 0
    for start in range(0, len(windows), chunk):
        for out in llm.generate(windows[start:start + chunk], params):
            ids = out.prompt_token_ids
            total -= sum(out.prompt_logprobs[j][ids[j]].logprob for j in range(1, len(ids)))
            count += len(ids) - 1
    return total / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--formats", default="bf16,q8_0,q4_0", help="comma-separated: bf16, q8_0, q4_0")
    p.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    p.add_argument("--max-windows", type=int, default=None, help="score only the first N windows")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args()
    results, windows = {}, None
    for fmt in args.formats.split(","):
        llm = LLM(quantization=None if fmt == "bf16" else fmt, kv_cache_memory=256 << 20)
        windows = windows or heldout_windows(llm, args.stdlib, args.max_windows)
        t0 = time.perf_counter()
        loss = mean_loss(llm, windows)
        results[fmt] = {"loss": loss, "perplexity": math.exp(loss), "seconds": time.perf_counter() - t0}
        print(f"{fmt}: loss {loss:.4f} nats/token, perplexity {math.exp(loss):.3f} "
              f"({len(windows)} windows of {WINDOW} tokens)", flush=True)
    base = results.get("bf16")
    if base:
        for fmt, r in results.items():
            r["perplexity_vs_bf16"] = r["perplexity"] / base["perplexity"]
    report = {"windows": len(windows or []), "window_tokens": WINDOW, "results": results}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
