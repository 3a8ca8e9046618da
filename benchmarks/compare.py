"""Two result files -> a table of ratios, with regressions flagged only beyond the noise.

The noise of a case is measured by repeating it: the spread of its timed repeats (their
interquartile range, turned into the standard error of their median) and, when a file holds
the same case several times (runs appended to one file), the spread of those runs' medians. A
change is flagged when it exceeds `z` combined standard errors of the two sides and is at least
`floor` (default 5%): on a shared machine a run drifts by a few percent whatever the code does.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from hearth.benchmarks import schema

# the standard error of a median of n samples is about 1.2533 sigma / sqrt(n); an interquartile
# range is about 1.349 sigma for normal noise
_MEDIAN_SE = 1.2533 / 1.349


@dataclass
class Side:
    """One case in one file: its median time and the relative standard error of that median."""

    label: str
    median_s: float
    noise: float
    runs: int


@dataclass
class Row:
    label: str
    old: Side | None
    new: Side | None
    speedup: float | None  # old time / new time: > 1 is faster
    threshold: float | None  # the relative change that counts as beyond noise
    verdict: str  # "faster", "slower", "same", "new", "gone"


def load(path: Path) -> list[schema.Result]:
    """Results from our JSONL or from a pytest-benchmark JSON saved by the kernel suite."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such result file: {path}")
    if path.suffix == ".json":
        from hearth.benchmarks.pytest_results import from_pytest_benchmark

        return from_pytest_benchmark(json.loads(path.read_text()))
    return schema.read(path)


def summarize(results: list[schema.Result]) -> dict[tuple, Side]:
    """Each case's median time and noise, pooling the rows of a case that ran several times."""
    groups: dict[tuple, list[schema.Result]] = {}
    for r in results:
        groups.setdefault(r.key(), []).append(r)
    out = {}
    for key, rows in groups.items():
        medians = [r.median_s for r in rows]
        median = statistics.median(medians)
        within = max(_MEDIAN_SE * r.relative_spread / math.sqrt(r.repeats) for r in rows)
        between = (statistics.stdev(medians) / median) if len(rows) > 1 else 0.0
        out[key] = Side(rows[0].label(), median, max(within, between), len(rows))
    return out


def compare(old: list[schema.Result], new: list[schema.Result], floor: float = 0.05, z: float = 3.0) -> list[Row]:
    """One row per case of either side, in the order the cases first appear."""
    a, b = summarize(old), summarize(new)
    rows = []
    for key in list(a) + [k for k in b if k not in a]:
        o, n = a.get(key), b.get(key)
        if o is None or n is None:
            rows.append(Row((o or n).label, o, n, None, None, "gone" if n is None else "new"))
            continue
        threshold = max(floor, z * math.hypot(o.noise, n.noise))
        speedup = o.median_s / n.median_s
        change = speedup - 1 if speedup >= 1 else 1 - 1 / speedup  # relative, either direction
        verdict = "same" if abs(change) <= threshold else ("faster" if speedup > 1 else "slower")
        rows.append(Row(o.label, o, n, speedup, threshold, verdict))
    return rows


def _time(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} µs"


def table(rows: list[Row]) -> str:
    """The comparison as a markdown table, regressions in bold."""
    lines = ["| case | old | new | speed (old/new) | noise threshold | verdict |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        old = _time(r.old.median_s) if r.old else "-"
        new = _time(r.new.median_s) if r.new else "-"
        speed = f"{r.speedup:.3f}x" if r.speedup is not None else "-"
        thr = f"±{100 * r.threshold:.1f}%" if r.threshold is not None else "-"
        verdict = "**SLOWER**" if r.verdict == "slower" else r.verdict
        lines.append(f"| {r.label} | {old} | {new} | {speed} | {thr} | {verdict} |")
    slower = sum(r.verdict == "slower" for r in rows)
    faster = sum(r.verdict == "faster" for r in rows)
    lines.append(f"\n{len(rows)} cases: {slower} slower beyond noise, {faster} faster, "
                 f"{sum(r.verdict == 'same' for r in rows)} within noise, "
                 f"{sum(r.verdict in ('new', 'gone') for r in rows)} only on one side.")
    return "\n".join(lines)
