"""Charts of benchmark results (PNG): the kernels' roofline, decode throughput against batch size,
and serving latency against load.

Each chart has a pure data step (`roofline_points`, `roofline_ceilings`, `decode_series`,
`serve_series`) that tests check without pixels; the drawing functions only lay those out.
matplotlib is imported inside the drawing functions, so importing this module is cheap and the
suites that never plot do not need it. Figures are built with `matplotlib.figure.Figure`, never
pyplot: no GUI backend is chosen, no global figure list grows, and PNGs render through Agg
without a display (CI, ssh).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth.benchmarks.schema import Result

PERCENTILES = ("p50", "p90", "p99")
_STYLES = {"p50": "-", "p90": "--", "p99": ":"}
# the roof is drawn in grey, one line style per compute ceiling, so the colours stay the cases'
_ROOF_STYLES = ("-", "--", "-.", ":") * 4


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("benchmark plots need matplotlib: install the `bench` extra "
                          "(pip install -e '.[bench]') or matplotlib itself") from None
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def _title(what: str, rows: list[Result]) -> str:
    """`what`, the devices the rows ran on and their date (or span of dates)."""
    dates = sorted({r.date for r in rows if r.date})
    when = "" if not dates else dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    return f"{what}: {', '.join(sorted({r.device for r in rows}))}" + (f", {when}" if when else "")


def compact_shape(shape: dict) -> str:
    """A shape in few characters: one-letter dims glued to their value (M1 K896), others k=v."""
    return " ".join(f"{k}{v}" if len(k) <= 2 else f"{k}={v}" for k, v in shape.items())


def case_label(r: Result) -> str:
    """A short label of a kernel case: name, dtype, shape and the batch when the shape lacks it."""
    batch = f" b{r.batch}" if r.batch is not None and "batch" not in r.shape else ""
    return f"{r.name} {r.dtype} {compact_shape(r.shape)}{batch}".strip()


# ------------------------------------------------------------------ roofline

@dataclass(frozen=True)
class Roof:
    """The ceilings a roofline is drawn under, by name: bandwidths in bytes/s, peaks in ops/s."""

    memory: dict[str, float]
    compute: dict[str, float]


def roofline_points(results: list[Result]) -> list[tuple[str, float, float, float | None]]:
    """(label, arithmetic intensity in FLOP/byte, achieved FLOP/s, fraction of its ceiling) of
    every kernels row that has counted bytes and FLOPs; other rows are left out."""
    return [(case_label(r), r.flops / r.bytes, r.flops / r.median_s, r.fraction)
            for r in results if r.suite == "kernels" and r.flops and r.bytes]


def roofline_ceilings(results: list[Result]) -> Roof:
    """The rows' ceilings back in bytes/s and ops/s (rows store GB/s and TFLOP/s, units in the keys)."""
    memory: dict[str, float] = {}
    compute: dict[str, float] = {}
    for r in results:
        for key, value in r.ceilings.items():
            if key.endswith("_GB/s"):
                target, name, scale = memory, key[: -len("_GB/s")], 1e9
            elif key.endswith("_TFLOP/s"):
                target, name, scale = compute, key[: -len("_TFLOP/s")], 1e12
            else:
                continue
            # one run's rows share their ceilings; over several runs keep the highest (as ceilings.best_of)
            target[name] = max(target.get(name, 0.0), value * scale)
    return Roof(memory, compute)


def _rate_unit(peak: float) -> tuple[float, str]:
    return (1e12, "TFLOP/s") if peak >= 2e12 else (1e9, "GFLOP/s")


MAX_LABELLED = 24  # roofline points that get a text label; the tables carry every figure


def _draw_roof(ax: Any, roof: Roof, lo: float, hi: float, scale: float, unit: str) -> None:
    """Each compute peak as min(peak, bandwidth x intensity): the slope then the flat roof."""
    import numpy as np

    x = np.geomspace(lo, hi, 256)
    for bw_name, bw in roof.memory.items():
        if not roof.compute:  # no peak measured: the bandwidth's slope alone
            ax.plot(x, bw * x / scale, color="0.4", lw=1.5)
        ax.annotate(f"{bw_name} {bw / 1e9:.4g} GB/s", (x[4], bw * x[4] / scale), xytext=(0, 6),
                    textcoords="offset points", fontsize=7, color="0.3")
        for (name, peak), ls in zip(roof.compute.items(), _ROOF_STYLES):
            # one legend entry per peak, not one per (peak, bandwidth) pair
            first = bw_name == next(iter(roof.memory))
            ax.plot(x, np.minimum(peak, bw * x) / scale, color="0.3", lw=1.3, ls=ls,
                    label=f"{name} {peak / scale:.3g} {unit}" if first else None)
    if not roof.memory:  # no bandwidth measured: the compute peaks alone, flat
        for (name, peak), ls in zip(roof.compute.items(), _ROOF_STYLES):
            ax.axhline(peak / scale, color="0.3", lw=1.3, ls=ls, label=f"{name} {peak / scale:.3g} {unit}")


def _draw_roofline(rows: list[Result], path: Path, title: str) -> Path:
    points, roof = roofline_points(rows), roofline_ceilings(rows)
    intensities = [p[1] for p in points]
    # the x range covers every case and every ridge point (where a peak meets a bandwidth)
    ridges = [peak / bw for bw in roof.memory.values() for peak in roof.compute.values()]
    lo, hi = min(intensities + ridges) / 4, max(intensities + ridges) * 4
    scale, unit = _rate_unit(max([p[2] for p in points] + list(roof.compute.values())))
    fig = _figure(8.5, 5.5)
    ax = fig.add_subplot()
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)",
           ylabel=f"achieved ({unit})", title=title)
    _draw_roof(ax, roof, lo, hi, scale, unit)
    names = sorted({r.name for r in rows})
    markers = "osD^vP*Xh<>"
    for i, name in enumerate(names):
        mine = roofline_points([r for r in rows if r.name == name])
        ax.scatter([p[1] for p in mine], [p[2] / scale for p in mine], marker=markers[i % len(markers)],
                   color=f"C{i}", s=28, zorder=3, label=name)
        if len(points) > MAX_LABELLED:  # past a few dozen points, labels only hide each other
            continue
        for j, (label, x, y, fraction) in enumerate(sorted(mine, key=lambda p: p[1])):
            text = label[len(name) + 1:] + (f" ({fraction:.2f})" if fraction is not None else "")
            # neighbours (same kernel, similar intensity) alternate above/below so their labels don't overlap
            ax.annotate(text, (x, y / scale), xytext=(5, 3 if j % 2 == 0 else -9), textcoords="offset points",
                        fontsize=6, color=f"C{i}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def roofline(results: list[Result], path: Path) -> list[Path]:
    """Kernels rows on a log-log roofline, one chart per (backend, device); returns the paths.

    With one (backend, device) the chart is `path` itself; with several each gets the backend and
    device appended to the file's stem. Each case is a marker labelled with its dtype, shape and
    fraction of its binding ceiling; rows without counted bytes and FLOPs are left out."""
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        if r.suite == "kernels" and r.flops and r.bytes:
            groups[(r.backend, r.device)].append(r)
    path = Path(path)
    written = []
    for (backend, device), rows in groups.items():
        out = path if len(groups) == 1 else path.with_name(f"{path.stem}-{_slug(backend)}-{_slug(device)}{path.suffix}")
        written.append(_draw_roofline(rows, out, _title(f"Roofline ({backend})", rows)))
    return written


def _against_batch(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Axes of a figure against batch or load: base-2 log x labelled 1, 2, 4, ..., y from zero."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)


# ------------------------------------------------------------------ series against batch / load

def _series(rows: list[Result], key_of: Callable[[Result], dict], point_of: Callable[[Result], Any]) -> dict[str, list]:
    """Rows grouped into labelled series sorted by batch. A label always names the model and dtype,
    and any other key field only where series differ in it (so one device is not repeated)."""
    keyed: dict[tuple, list] = defaultdict(list)
    for r in rows:
        keyed[tuple(key_of(r).items())].append((r.batch or 0, point_of(r)))
    fields = {k for key in keyed for k, _ in key}
    varying = {k for k in fields if len({dict(key).get(k) for key in keyed}) > 1}
    out = {}
    for key, points in keyed.items():
        label = " ".join(str(v) if k in ("model", "dtype") else f"{k}={v}"
                         for k, v in key if k in ("model", "dtype") or k in varying)
        out[label] = [p for _, p in sorted(points, key=lambda bp: bp[0])]
    return out


def _series_key(r: Result, *leave_out: str) -> dict:
    shape = {k: v for k, v in r.shape.items() if k != "model" and k not in leave_out}
    return {"model": r.shape.get("model", "?"), "dtype": r.dtype, "backend": r.backend, "device": r.device, **shape}


def decode_series(results: list[Result]) -> dict[str, list[tuple[int, float]]]:
    """Engine decode rows as {label: [(batch, tokens/s), ...]}, one series per model and dtype
    (and whatever else differs between series). tokens/s is the row's own figure, or batch over
    the step time where a row lacks it."""
    rows = [r for r in results if r.suite == "engine" and r.name == "decode" and r.batch]

    def point(r: Result) -> tuple[int, float]:
        return r.batch, float(r.extra.get("tokens_per_s", r.batch / r.median_s))

    return _series(rows, _series_key, point)


def decode_vs_batch(results: list[Result], path: Path) -> Path | None:
    """Decode tokens/s against the number of sequences (log2 x), a line per model and dtype;
    None (nothing written) when there are no engine decode rows."""
    series = decode_series(results)
    if not series:
        return None
    rows = [r for r in results if r.suite == "engine" and r.name == "decode"]
    fig = _figure(7.5, 5)
    ax = fig.add_subplot()
    for label, points in series.items():
        ax.plot([b for b, _ in points], [t for _, t in points], marker="o", label=label)
    _against_batch(ax, "sequences decoding together (batch)", "decode tokens/s", _title("Decode throughput vs batch", rows))
    ax.legend(fontsize=8)
    return _save(fig, path)


@dataclass(frozen=True)
class LoadPoint:
    """One serving run at one concurrency: latency percentiles in seconds and output tokens/s."""

    concurrency: int
    ttft_s: dict[str, float]
    tpot_s: dict[str, float]
    output_tokens_per_s: float


def serve_series(results: list[Result]) -> dict[str, list[LoadPoint]]:
    """Serve rows as {label: [LoadPoint, ...]} sorted by concurrency, one series per model and
    dtype (the request count is left out of the key: it often grows with the load)."""
    rows = [r for r in results if r.suite == "serve" and r.batch]

    def point(r: Result) -> LoadPoint:
        # a statistic with no samples (TPOT of one-token outputs) is None in the row
        return LoadPoint(r.batch, dict(r.extra.get("ttft_s") or {}), dict(r.extra.get("tpot_s") or {}),
                         float(r.extra.get("output_tokens_per_s", float("nan"))))

    return _series(rows, lambda r: _series_key(r, "requests"), point)


def _latency_panel(ax: Any, series: dict[str, list[LoadPoint]], field: str, title: str) -> None:
    for i, (label, points) in enumerate(series.items()):
        for pct in PERCENTILES:
            xs = [p.concurrency for p in points if pct in getattr(p, field)]
            ys = [getattr(p, field)[pct] * 1e3 for p in points if pct in getattr(p, field)]
            ax.plot(xs, ys, color=f"C{i}", ls=_STYLES[pct], marker=".", label=pct if i == 0 else None)
    _against_batch(ax, "concurrency", "ms", title)


def latency_vs_load(results: list[Result], path: Path) -> Path | None:
    """Three panels against concurrency: TTFT p50/p90/p99, TPOT p50/p90/p99 (line style per
    percentile, colour per series) and output tokens/s; None when there are no serve rows."""
    series = serve_series(results)
    if not series:
        return None
    rows = [r for r in results if r.suite == "serve"]
    fig = _figure(13, 4.2)
    ttft, tpot, tput = fig.subplots(1, 3)
    _latency_panel(ttft, series, "ttft_s", "time to first token")
    _latency_panel(tpot, series, "tpot_s", "time per output token")
    ttft.legend(fontsize=8, title="percentile", title_fontsize=8)
    for i, (label, points) in enumerate(series.items()):
        tput.plot([p.concurrency for p in points], [p.output_tokens_per_s for p in points],
                  color=f"C{i}", marker="o", label=label)
    _against_batch(tput, "concurrency", "output tokens/s", "throughput")
    tput.legend(fontsize=8)
    fig.suptitle(_title("Serving latency vs load", rows))
    return _save(fig, path)


def plot_all(results: list[Result], out_dir: Path) -> list[Path]:
    """Every chart the rows allow, written under `out_dir` (roofline*.png, decode_vs_batch.png,
    latency_vs_load.png); a chart whose suite has no rows is skipped. Returns the paths written."""
    out_dir = Path(out_dir)
    written = roofline(results, out_dir / "roofline.png")
    for draw, name in ((decode_vs_batch, "decode_vs_batch.png"), (latency_vs_load, "latency_vs_load.png")):
        path = draw(results, out_dir / name)
        if path is not None:
            written.append(path)
    return written
