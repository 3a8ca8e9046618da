"""The kernel suite: every CPU kernel case under pytest-benchmark, and the GPU kernels when a
GPU is present, as rows of the one result schema.

CPU cases live in benchmarks/kernel_cases/ (pytest files named bench_*.py). pytest-benchmark
times them (calibrated rounds, warm-up, its statistics) and writes its JSON, into which the
suite's conftest puts the ceilings it measured at the start and the end of the session. That
JSON is kept (pytest-benchmark's own storage, so `pytest-benchmark compare` works on saved runs)
and converted here into result rows. GPU cases (benchmarks/bench_gpu.py) are timed with CUDA
events instead: a host clock around asynchronous launches would time the launches.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hearth.benchmarks import schema
from hearth.benchmarks.ceilings import cuda_available
from hearth.benchmarks.pytest_results import from_pytest_benchmark

CASES = Path(__file__).resolve().parent / "kernel_cases"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kernels")
    g.add_argument("-k", dest="select", metavar="EXPR", help="only the cases matching this pytest -k expression")
    g.add_argument("--max-time", type=float, default=1.0, help="seconds of timed rounds per CPU case")
    g.add_argument("--min-rounds", type=int, default=10, help="timed rounds per CPU case, at least")
    g.add_argument("--no-gpu", action="store_true", help="CPU cases only, even with a GPU present")


def pytest_args(json_path: Path, quick: bool, args: argparse.Namespace, storage: Path | None) -> list[str]:
    """The pytest command line of one suite run."""
    # importlib mode: pytest puts nothing on sys.path (its default would add the suite's own
    # folder, exposing schema.py, counts.py ... as top-level modules)
    argv = [str(CASES), "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-o", "python_files=bench_*.py",
            "-o", "python_functions=bench_*", "--benchmark-only", "--benchmark-quiet",
            f"--benchmark-json={json_path}", "--benchmark-warmup=on", "--benchmark-disable-gc"]
    if quick:
        argv += ["--bench-quick", "--benchmark-max-time=0.05", "--benchmark-min-rounds=5"]
    else:
        argv += [f"--benchmark-max-time={args.max_time}", f"--benchmark-min-rounds={args.min_rounds}"]
    if storage is not None:
        argv += [f"--benchmark-storage=file://{storage}", f"--benchmark-save={time.strftime('%Y%m%d-%H%M%S')}"]
    if args.select:
        argv += ["-k", args.select]
    return argv


class _Progress:
    """A tqdm bar over the collected cases (a pytest plugin)."""

    def pytest_collection_finish(self, session) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=len(session.items), desc="kernels (cpu)", unit="case", leave=False)

    def pytest_runtest_logfinish(self, nodeid: str, location) -> None:
        self.bar.update(1)
        self.bar.set_postfix_str(nodeid.rsplit("::", 1)[-1][:48])

    def pytest_unconfigure(self, config) -> None:
        if hasattr(self, "bar"):
            self.bar.close()


def run_cpu(args: argparse.Namespace, quick: bool, progress: bool, storage: Path | None) -> list[schema.Result]:
    """Run the CPU cases under pytest-benchmark (in this process) and convert its JSON."""
    import pytest

    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "kernels.json"
        code = pytest.main(pytest_args(json_path, quick, args, storage), plugins=[_Progress()] if progress else [])
        if code != 0 or not json_path.exists():
            raise RuntimeError(f"the kernel suite's pytest run failed (exit status {int(code)})")
        return from_pytest_benchmark(json.loads(json_path.read_text()))


def run(args: argparse.Namespace, quick: bool, progress: bool, storage: Path | None = None) -> list[schema.Result]:
    """Every kernel case: the CPU's, then the GPU's when one is usable (and not --no-gpu)."""
    results = run_cpu(args, quick, progress, storage)
    if cuda_available() and not args.no_gpu:
        from hearth.benchmarks import bench_gpu

        results += bench_gpu.run(bench_gpu.Device(), quick=quick, progress=progress)
    return results
