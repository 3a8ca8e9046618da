"""The kernel suite's pytest-benchmark JSON as rows of the one result schema (for the suite
itself and for `compare` on a saved run)."""

from __future__ import annotations

from hearth.benchmarks import schema
from hearth.benchmarks.ceilings import best_of


def from_pytest_benchmark(data: dict) -> list[schema.Result]:
    """Result rows from a pytest-benchmark JSON written by this suite (saved or fresh)."""
    info = data.get("machine_info", {}).get("hearth")
    if info is None:
        raise ValueError("not a run of hearth's kernel suite: its machine_info has no 'hearth' entry")
    date = str(data.get("datetime", ""))[:10]
    out = []
    for b in data["benchmarks"]:
        e, st = b["extra_info"], b["stats"]
        calls = e.get("calls", 1)
        r = schema.make(e["case"], suite="kernels", backend=e["backend"], device=info["device"], shape=e["shape"],
                        dtype=e["dtype"], batch=e["batch"], stats=(st["median"] / calls, st["iqr"] / calls, st["rounds"]),
                        nbytes=e["bytes"], flops=e["flops"], memory=e["memory"],
                        ceilings=best_of(info["ceilings"], e.get("ceilings", {})),
                        compute=e["compute"], machine=info["device"], commit=info["commit"],
                        extra={"test": b["name"], "min_s": st["min"] / calls, "iterations": st["iterations"]})
        r.date = date or r.date
        out.append(r)
    return out
