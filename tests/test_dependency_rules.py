"""The dependency directions of DESIGN.md, checked by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARRAY_LIBS = {"numpy", "cupy", "torch", "ml_dtypes", "triton", "numba"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("package", ["engine", "kernels", "server", "benchmarks"])
def test_no_torch_at_run_time(package):
    for path in _modules(package):
        assert "torch" not in _top(_imports(path)), f"{path} imports torch"


def test_kernels_never_import_engine_or_server():
    for path in _modules("kernels"):
        assert not _top(_imports(path)) & {"engine", "server"}, path


@pytest.mark.parametrize("module", ["scheduler.py", "kv_cache.py", "request.py"])
def test_bookkeeping_imports_no_array_library(module):
    assert not _top(_imports(ROOT / "engine" / module)) & ARRAY_LIBS


def test_server_uses_engine_only_through_its_public_face():
    # engine.gguf: the `hearth convert` tool writes GGUF files; it runs no engine
    allowed = {"engine", "engine.llm", "engine.async_llm", "engine.sampling_params", "engine.outputs", "engine.gguf"}
    for path in _modules("server"):
        used = {n for n in _imports(path) if n.split(".")[0] == "engine"}
        assert used <= allowed, f"{path} imports {used - allowed}"
