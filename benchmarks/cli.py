"""`python -m hearth.benchmarks ...` and `hearth bench ...`: run a suite, compare runs, plot, report.

    python -m hearth.benchmarks kernels [--quick]     # CPU kernels (pytest-benchmark), GPU kernels if present
    python -m hearth.benchmarks engine [--quick]      # offline prefill/decode tok/s on random weights
    python -m hearth.benchmarks serve [--quick]       # latency percentiles against load, over HTTP
    python -m hearth.benchmarks all --quick           # the three, each with its quick defaults
    python -m hearth.benchmarks compare OLD NEW       # ratio table, regressions beyond noise flagged
    python -m hearth.benchmarks plot [FILE ...]       # PNG charts (roofline, decode vs batch, latency vs load)
    python -m hearth.benchmarks report [--readme]     # markdown tables of the latest runs (into README.md)

Every suite writes one JSONL file per run, in the one result schema (benchmarks/schema.py), to
--results-dir (benchmarks/results in a source checkout).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from hearth.benchmarks import compare as cmp
from hearth.benchmarks import schema
from hearth.benchmarks.common import commit

ROOT = Path(__file__).resolve().parent
SUITES = {"kernels": "hearth.benchmarks.kernel_suite", "engine": "hearth.benchmarks.engine_suite", "serve": "hearth.benchmarks.serve_suite"}
README = ROOT.parent / "README.md"


def _suite_module(name: str):
    return importlib.import_module(SUITES[name])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a small set of cases, under two minutes in all")
    p.add_argument("--results-dir", type=Path, default=None, help="where the run's JSONL goes")
    p.add_argument("--no-save", action="store_true", help="print the table only, write no file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hearth bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in SUITES:
        p = sub.add_parser(name, help=f"run the {name} suite", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _common(p)
        _suite_module(name).add_arguments(p)
    p = sub.add_parser("all", help="run kernels, engine and serve with their defaults")
    _common(p)
    p = sub.add_parser("compare", help="two result files -> ratio table, regressions beyond noise flagged")
    p.add_argument("old", type=Path, help="the baseline: a .jsonl of ours or a saved pytest-benchmark .json")
    p.add_argument("new", type=Path)
    p.add_argument("--floor", type=float, default=0.05, help="smallest relative change ever flagged")
    p.add_argument("--z", type=float, default=3.0, help="flag changes beyond this many standard errors")
    p.add_argument("--fail-on-regression", action="store_true", help="exit status 1 if any case is slower")
    for name, help_ in (("plot", "PNG charts of result files"), ("report", "markdown tables of result files")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("files", nargs="*", type=Path, help="result files (default: the latest run of each suite)")
        p.add_argument("--results-dir", type=Path, default=None)
        p.add_argument("--out", type=Path, default=None, help="plots folder (default: RESULTS_DIR/plots)")
        if name == "report":
            p.add_argument("--readme", action="store_true", help="write the tables and plots into README.md")
    return ap


def run_suite(name: str, args: argparse.Namespace) -> list[schema.Result]:
    """Run one suite, write its JSONL (unless --no-save) and print its table."""
    from hearth.benchmarks import report

    results_dir = args.results_dir or schema.default_results_dir()
    t0 = time.perf_counter()
    module = _suite_module(name)
    kwargs = {"storage": results_dir / "pytest-benchmark"} if name == "kernels" and not args.no_save else {}
    results = module.run(args, quick=args.quick, progress=not args.no_progress, **kwargs)
    print(report.markdown(results))
    if not args.no_save:
        path = schema.write(results, schema.run_file(results_dir, name, commit(), args.quick))
        print(f"\n{len(results)} results in {path}", file=sys.stderr)
    print(f"{name} suite: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return results


def _suite_defaults(name: str, quick: bool, parent: argparse.Namespace) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    _common(p)
    _suite_module(name).add_arguments(p)
    args = p.parse_args(["--quick"] if quick else [])
    args.results_dir, args.no_save, args.no_progress = parent.results_dir, parent.no_save, parent.no_progress
    return args


def _input_files(args: argparse.Namespace) -> list[Path]:
    if args.files:
        return args.files
    results_dir = args.results_dir or schema.default_results_dir()
    found = [schema.latest(results_dir, s) or schema.latest(results_dir, s, quick=True) for s in SUITES]
    if not any(found):
        raise ValueError(f"no result files in {results_dir}: run a suite first")
    return [f for f in found if f]


def readme_block(tables: str, plots_dir: Path) -> str:
    """The README's benchmark section: the tables, then every chart in `plots_dir`."""
    images = [f"![{p.stem.replace('_', ' ')}]({p.resolve().relative_to(README.parent.resolve())})"
              for p in sorted(plots_dir.glob("*.png"))]
    return tables + ("\n\n" + "\n".join(images) if images else "")


def plot_and_report(args: argparse.Namespace) -> int:
    from hearth.benchmarks import plots, report

    files = _input_files(args)
    results = [r for f in files for r in cmp.load(f)]
    out = args.out or (args.results_dir or schema.default_results_dir()) / "plots"
    if args.command == "plot" or getattr(args, "readme", False):
        for path in plots.plot_all(results, out):
            print(f"wrote {path}", file=sys.stderr)
    text = report.markdown(results)
    if args.command == "report":
        print(text)
        if args.readme:
            block = readme_block(text, out)
            changed = report.update_readme(README, block)
            print(f"README.md {'updated' if changed else 'already current'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in SUITES:
            run_suite(args.command, args)
        elif args.command == "all":
            for name in SUITES:
                run_suite(name, _suite_defaults(name, args.quick, args))
        elif args.command == "compare":
            rows = cmp.compare(cmp.load(args.old), cmp.load(args.new), floor=args.floor, z=args.z)
            print(cmp.table(rows))
            return 1 if args.fail_on_regression and any(r.verdict == "slower" for r in rows) else 0
        else:
            return plot_and_report(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
