"""The dependency directions of DESIGN.md, checked by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> the package it installs as (pyproject.toml's wheel.packages)
PARTS = {"hearth": "hearth", "engine": "hearth.engine", "kernels": "hearth.kernels", "server": "hearth.server",
         "benchmarks": "hearth.benchmarks"}
ARRAY_LIBS = {"numpy", "cupy", "torch", "ml_dtypes", "triton", "numba"}
# the public face of the engine, which the server may use (DESIGN.md): AsyncLLM, SamplingParams
# and the output types, all exported by the top-level package
ENGINE_FACE = {"hearth"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PARTS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


MODULES = {_module_name(p): p for folder in PARTS for p in _modules(folder)}


def _imports(path: Path) -> set[str]:
    """Absolute names of every module a file imports, at its top or inside a function."""
    names = set()
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one (the package itself
            # is then only the parent that holds it)
            submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
            names |= submodules if len(submodules) == len(node.names) else {base, *submodules}
    return names


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def _hearth_imports(path: Path) -> set[str]:
    """The hearth modules a file imports (package names resolved to the module that exists)."""
    return {n for n in _imports(path) if n in MODULES}


def test_every_part_is_found():
    # guards the test itself: an empty listing would pass every rule below
    for part, n in (("hearth.engine.", 40), ("hearth.kernels.", 15), ("hearth.server.", 5),
                    ("hearth.benchmarks.", 15)):
        assert sum(m.startswith(part) for m in MODULES) >= n, part


@pytest.mark.parametrize("folder", ["engine", "kernels", "server", "benchmarks"])
def test_no_top_level_package_outside_hearth(folder):
    # a folder at the repository root with an __init__.py would be importable as `engine`,
    # `kernels` ... whenever the root is on sys.path, shadowing other distributions of that name
    assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/__init__.py makes `{folder}` a top-level package"


@pytest.mark.parametrize("folder", list(PARTS))
def test_code_imports_only_the_hearth_package(folder):
    for path in _modules(folder):
        stray = _top(_imports(path)) & {"engine", "kernels", "server", "benchmarks"}
        assert not stray, f"{path} imports {stray}: the parts are hearth.engine, hearth.kernels, ..."


@pytest.mark.parametrize("folder", ["engine", "kernels", "server", "benchmarks", "hearth"])
def test_no_torch_at_run_time(folder):
    for path in _modules(folder):
        assert "torch" not in _top(_imports(path)), f"{path} imports torch"


def test_kernels_never_import_engine_or_server():
    for path in _modules("kernels"):
        used = {n for n in _imports(path) if n.startswith(("hearth.engine", "hearth.server")) or n == "hearth"}
        assert not used, f"{path} imports {used}"


def test_nothing_below_the_cli_imports_benchmarks():
    for folder in ("engine", "kernels", "server"):
        for path in _modules(folder):
            used = {n for n in _imports(path) if n.startswith("hearth.benchmarks")}
            assert not used, f"{path} imports {used}"


@pytest.mark.parametrize("module", ["scheduler.py", "kv_cache.py", "request.py"])
def test_bookkeeping_imports_no_array_library(module):
    assert not _top(_imports(ROOT / "engine" / "core" / module)) & ARRAY_LIBS


def test_server_uses_engine_only_through_its_public_face():
    for path in _modules("server"):
        used = {n for n in _imports(path) if n == "hearth" or n.startswith("hearth.engine")}
        assert used <= ENGINE_FACE, f"{path} imports {used - ENGINE_FACE}"


def _cycle() -> list[str] | None:
    graph = {m: sorted(_hearth_imports(p) - {m}) for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in graph.get(m, []):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in graph:
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    # a package importing its own submodules (hearth -> hearth.engine...) is not a cycle unless
    # one of them imports it back; lazy (in-function) imports count too
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)
