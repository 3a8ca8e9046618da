"""The one result schema every benchmark writes: a JSON object per line (JSONL).

A row says what ran (suite, name, backend, device, shape, dtype or format, batch), how long it
took (median and spread over repeats), what it had to move and compute (counted bytes and
FLOPs, from the shapes), what rate that is (GB/s, TFLOP/s), and how close that is to the
hardware's ceiling measured in the same run (`fraction`, naming which ceiling bound it). Plus
where and when: machine, commit, date. Anything else a suite reports goes under `extra`.

For integer kernels `flops` counts integer operations (2 per multiply-add) and `TFLOP/s` is
tera-ops per second: the field keeps one name so the roofline and the tables need no cases.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

SUITES = ("kernels", "engine", "serve")
_HERE = Path(__file__).resolve().parent


def default_results_dir() -> Path:
    """benchmarks/results in a source checkout; ./hearth-bench-results for an installed copy."""
    return _HERE / "results" if (_HERE.parent / "pyproject.toml").exists() else Path.cwd() / "hearth-bench-results"


@dataclass
class Result:
    """One measured case. `median_s` is the time of one unit of work (a kernel call, an engine
    step, a request); `spread_s` the interquartile range of the repeats; `bytes`/`flops` are per
    unit; `fraction` is the achieved rate over the binding ceiling named in `ceiling`, whose value
    and the other ceilings of the run are in `ceilings` (units in their names)."""

    name: str
    suite: str
    backend: str
    device: str
    shape: dict
    dtype: str
    batch: int | None
    median_s: float
    spread_s: float
    repeats: int
    bytes: int | None = None
    flops: int | None = None
    gbps: float | None = None
    tflops: float | None = None
    ceiling: str | None = None
    fraction: float | None = None
    ceilings: dict = field(default_factory=dict)
    machine: str = ""
    commit: str = ""
    date: str = ""
    extra: dict = field(default_factory=dict)

    def key(self) -> tuple:
        """What identifies a case across runs (for comparisons): not when or where it ran."""
        return (self.suite, self.name, self.backend, json.dumps(self.shape, sort_keys=True), self.dtype, self.batch)

    def label(self) -> str:
        shape = ",".join(f"{k}={v}" for k, v in self.shape.items())
        batch = f" B={self.batch}" if self.batch is not None else ""
        return f"{self.name}[{shape}] {self.dtype}{batch} ({self.backend})"

    @property
    def relative_spread(self) -> float:
        return self.spread_s / self.median_s if self.median_s > 0 else math.inf

    def to_json(self) -> dict:
        row = asdict(self)
        row["GB/s"], row["TFLOP/s"] = row.pop("gbps"), row.pop("tflops")
        return row

    @classmethod
    def from_json(cls, row: dict) -> Result:
        """A row read back; a ValueError names the first missing or mistyped field."""
        row = dict(row)
        row["gbps"], row["tflops"] = row.pop("GB/s", None), row.pop("TFLOP/s", None)
        names = {f.name for f in fields(cls)}
        unknown = set(row) - names
        if unknown:
            raise ValueError(f"unknown result fields {sorted(unknown)} (put suite-specific figures under 'extra')")
        for name in ("name", "suite", "backend", "device", "shape", "dtype", "median_s", "spread_s", "repeats"):
            if name not in row:
                raise ValueError(f"result is missing the field {name!r}: {row.get('name', row)}")
        result = cls(**row)
        validate(result)
        return result


_TYPES = {"name": str, "suite": str, "backend": str, "device": str, "shape": dict, "dtype": str,
          "batch": (int, type(None)), "median_s": (int, float), "spread_s": (int, float), "repeats": int,
          "bytes": (int, type(None)), "flops": (int, type(None)), "gbps": (int, float, type(None)),
          "tflops": (int, float, type(None)), "ceiling": (str, type(None)),
          "fraction": (int, float, type(None)), "ceilings": dict, "machine": str, "commit": str, "date": str,
          "extra": dict}


def validate(r: Result) -> None:
    """Raise ValueError naming the first field that breaks the schema."""
    for name, types in _TYPES.items():
        value = getattr(r, name)
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"result {r.name!r}: field {name!r} has {type(value).__name__} {value!r}")
    if r.suite not in SUITES:
        raise ValueError(f"result {r.name!r}: suite {r.suite!r} is not one of {SUITES}")
    if not (r.median_s > 0 and math.isfinite(r.median_s)):
        raise ValueError(f"result {r.name!r}: median_s must be a positive time, got {r.median_s}")
    if r.spread_s < 0 or r.repeats < 1:
        raise ValueError(f"result {r.name!r}: spread_s must be >= 0 and repeats >= 1")
    if (r.fraction is None) != (r.ceiling is None):
        raise ValueError(f"result {r.name!r}: a fraction needs the ceiling it is a fraction of")


# ------------------------------------------------------------------ making rows

def spread(times: list[float]) -> tuple[float, float]:
    """(median, interquartile range) of repeated timings."""
    if not times:
        raise ValueError("no timings")
    if len(times) < 2:
        return times[0], 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return statistics.median(times), q3 - q1


def rates(nbytes: int | None, flops: int | None, median_s: float, ceilings: dict[str, float],
          memory: str | None, compute: str | None) -> dict:
    """GB/s, TFLOP/s and the roofline fraction of one case.

    `ceilings` maps names to values, bandwidths in bytes/s and rates in ops/s; `memory` and
    `compute` name the two that apply to this case (either may be None). The attainable rate is
    min(compute peak, arithmetic intensity x bandwidth), so the fraction of it achieved is the
    larger of (bytes/s over bandwidth) and (ops/s over peak): whichever ceiling binds."""
    gbps = nbytes / median_s / 1e9 if nbytes else None
    tflops = flops / median_s / 1e12 if flops else None
    candidates = []
    if memory is not None and nbytes:
        candidates.append((nbytes / median_s / ceilings[memory], memory))
    if compute is not None and flops:
        candidates.append((flops / median_s / ceilings[compute], compute))
    fraction, ceiling = max(candidates) if candidates else (None, None)
    return {"gbps": gbps, "tflops": tflops, "fraction": fraction, "ceiling": ceiling}


def ceiling_units(ceilings: dict[str, float]) -> dict[str, float]:
    """Ceilings for the record: bandwidths (names ending in _Bps) as GB/s, rates as TFLOP/s."""
    out = {}
    for name, value in ceilings.items():
        if name.endswith("_Bps"):
            out[name[:-4] + "_GB/s"] = value / 1e9
        else:
            out[name + "_TFLOP/s"] = value / 1e12
    return out


def make(name: str, *, suite: str, backend: str, device: str, shape: dict, dtype: str, batch: int | None,
         times: list[float] | None = None, stats: tuple[float, float, int] | None = None, nbytes: int | None = None, flops: int | None = None,
         ceilings: dict[str, float] | None = None, memory: str | None = None, compute: str | None = None,
         machine: str = "", commit: str = "", extra: dict | None = None) -> Result:
    """A validated Result from the raw timings of one unit of work (or, from a harness that keeps
    its own statistics, `stats` = (median, interquartile range, repeats)) and its counted
    bytes/FLOPs."""
    if (times is None) == (stats is None):
        raise ValueError("give either the timings or their (median, iqr, repeats)")
    median_s, iqr, repeats = stats if stats is not None else (*spread(times), len(times))
    ceilings = ceilings or {}
    r = Result(name=name, suite=suite, backend=backend, device=device, shape=shape, dtype=dtype, batch=batch,
               median_s=median_s, spread_s=iqr, repeats=repeats, bytes=nbytes, flops=flops,
               **rates(nbytes, flops, median_s, ceilings, memory, compute), ceilings=ceiling_units(ceilings),
               machine=machine, commit=commit, date=time.strftime("%Y-%m-%d"), extra=extra or {})
    validate(r)
    return r


# ------------------------------------------------------------------ files

def write(results: list[Result], path: Path, append: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w") as f:
        for r in results:
            validate(r)
            f.write(json.dumps(r.to_json()) + "\n")
    return path


def read(path: Path) -> list[Result]:
    """Every result in a JSONL file; a ValueError names the file and line that breaks the schema."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Result.from_json(json.loads(line)))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}:{i}: {e}") from None
    return out


def run_file(results_dir: Path, suite: str, commit: str, quick: bool = False) -> Path:
    """Where a run's results go: one file per suite, date and commit (quick runs marked)."""
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    return results_dir / f"{suite}-{stamp}-{commit}{'-quick' if quick else ''}.jsonl"


def latest(results_dir: Path, suite: str, quick: bool | None = False) -> Path | None:
    """The newest results file of a suite (by name, which starts with the date)."""
    files = sorted(p for p in results_dir.glob(f"{suite}-*.jsonl")
                   if quick is None or p.stem.endswith("-quick") == quick)
    return files[-1] if files else None
