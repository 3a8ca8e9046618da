"""Markdown tables of benchmark results, and the README block they are written into.

`markdown(results)` gives one table per suite and run (backend, device, machine, commit),
each preceded by a line naming where and when it ran and the ceilings measured in that run, since
every fraction in the table is relative to them. `update_readme` swaps that text in between the
README's `<!-- benchmarks:begin -->` and `<!-- benchmarks:end -->` markers.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from hearth.benchmarks.schema import SUITES, Result

BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
MISSING = "-"


def num(x: float | None) -> str:
    """A figure with about three significant digits, no exponent for everyday magnitudes."""
    if x is None:
        return MISSING
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:#.3g}"  # "#" keeps trailing zeros: 0.500, not 0.5


def duration(seconds: float | None) -> str:
    """A time in the unit that keeps it between 1 and 1000: s, ms or µs."""
    if seconds is None:
        return MISSING
    for scale, unit in ((1, "s"), (1e-3, "ms")):
        if seconds >= scale:
            return f"{num(seconds / scale)} {unit}"
    return f"{num(seconds * 1e6)} µs"


def _fraction(r: Result) -> str:
    if r.fraction is None:
        return MISSING
    # ceiling names carry their unit (read_Bps); the table reads better with the bare name
    return f"{r.fraction:.2f} {r.ceiling.removesuffix('_Bps')}"


def _ceilings(rows: list[Result]) -> str:
    best: dict[str, float] = {}
    for r in rows:
        for key, value in r.ceilings.items():
            best[key] = max(best.get(key, value), value)
    parts = []
    for key, value in best.items():
        name, _, unit = key.rpartition("_")  # "gemm_fp32_TFLOP/s": the unit follows the last "_"
        if unit == "TFLOP/s" and value < 1:  # CPU peaks read better in GFLOP/s
            value, unit = value * 1e3, "GFLOP/s"
        parts.append(f"{name} {num(value)} {unit}")
    return ", ".join(parts)


def _run_line(suite: str, rows: list[Result]) -> str:
    r = rows[0]
    machine = f", machine `{r.machine}`" if r.machine and r.machine != r.device else ""
    words = [f"**{suite}** on {r.device} ({r.backend}{machine})"]
    if r.commit:
        words.append(f"commit `{r.commit}`")
    dates = sorted({x.date for x in rows if x.date})
    if dates:
        words.append(dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}")
    ceilings = _ceilings(rows)
    return ", ".join(words) + "." + (f" Ceilings measured in this run: {ceilings}." if ceilings else "")


def _table(header: list[str], rows: list[list[str]], numeric_from: int) -> str:
    """A markdown table; columns from `numeric_from` on are figures, right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _shape(shape: dict, leave_out: tuple[str, ...] = ()) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items() if k not in leave_out)


def _spread(r: Result) -> str:
    return f" ±{r.relative_spread * 100:.0f}%" if r.repeats > 1 and r.median_s > 0 else ""


def kernels_table(rows: list[Result]) -> str:
    """Kernel cases in the order given: time (median, relative IQR), rates, fraction of ceiling."""
    body = [[r.name, _shape(r.shape), r.dtype, MISSING if r.batch is None else str(r.batch),
             duration(r.median_s) + _spread(r), num(r.gbps), num(r.tflops), _fraction(r)] for r in rows]
    return _table(["case", "shape", "dtype", "batch", "median", "GB/s", "TFLOP/s", "fraction of ceiling"], body, 3)


def engine_table(rows: list[Result]) -> str:
    """Engine runs by phase, model, dtype and batch: tokens/s and fraction of the roofline."""
    rows = sorted(rows, key=lambda r: (r.name, str(r.shape.get("model")), r.dtype, r.batch or 0))
    body = [[r.name, str(r.shape.get("model", MISSING)), r.dtype, _shape(r.shape, ("model",)),
             MISSING if r.batch is None else str(r.batch), num(r.extra.get("tokens_per_s")),
             duration(r.median_s) + _spread(r), _fraction(r)] for r in rows]
    return _table(["run", "model", "dtype", "shape", "batch", "tokens/s", "median", "fraction of roofline"],
                  body, 4)


def _pct(r: Result, metric: str, pct: str) -> str:
    return duration((r.extra.get(metric) or {}).get(pct))  # None where the statistic had no samples


def serve_table(rows: list[Result]) -> str:
    """Serving runs by model and concurrency: throughput and latency percentiles."""
    rows = sorted(rows, key=lambda r: (str(r.shape.get("model")), r.dtype, r.batch or 0))
    body = [[str(r.shape.get("model", MISSING)), r.dtype, str(r.batch), str(r.shape.get("requests", MISSING)),
             num(r.extra.get("output_tokens_per_s")), num(r.extra.get("requests_per_s")),
             _pct(r, "ttft_s", "p50"), _pct(r, "ttft_s", "p99"), _pct(r, "tpot_s", "p50"),
             _pct(r, "tpot_s", "p99"), duration((r.extra.get("e2e_s") or {}).get("p50", r.median_s))] for r in rows]
    header = ["model", "dtype", "concurrency", "requests", "output tok/s", "req/s", "TTFT p50", "TTFT p99",
              "TPOT p50", "TPOT p99", "e2e p50"]
    return _table(header, body, 2)


_TABLES = {"kernels": kernels_table, "engine": engine_table, "serve": serve_table}


def markdown(results: list[Result]) -> str:
    """One table per suite and run, each after a line giving device, machine, commit, date and
    that run's ceilings; suites in the order kernels, engine, serve. Empty for no results."""
    parts = []
    for suite in SUITES:
        runs: dict[tuple, list[Result]] = defaultdict(list)
        for r in results:
            if r.suite == suite:
                runs[(r.backend, r.device, r.machine, r.commit)].append(r)
        for rows in runs.values():
            parts.append(_run_line(suite, rows) + "\n\n" + _TABLES[suite](rows))
    return "\n\n".join(parts) + "\n" if parts else ""


def update_readme(readme: Path, block: str) -> bool:
    """Put `block` between the README's benchmark markers, leaving the rest untouched; returns
    whether the file changed. ValueError when a marker is missing, repeated or out of order."""
    readme = Path(readme)
    text = readme.read_text()
    for marker in (BEGIN, END):
        if text.count(marker) != 1:
            raise ValueError(f"{readme}: expected the marker {marker!r} exactly once, "
                             f"found it {text.count(marker)} times")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    if end < start:
        raise ValueError(f"{readme}: {END!r} comes before {BEGIN!r}")
    new = text[:start] + "\n" + block.strip("\n") + "\n" + text[end:]
    if new == text:
        return False
    readme.write_text(new)
    return True
