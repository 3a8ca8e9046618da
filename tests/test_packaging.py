"""What `pip` installs: one import package, `hearth`, that lives beside anything.

The wheel is built from this checkout (`pip wheel`, its own build folder) and installed into a new
virtual environment. That environment sees this one's packages (transformers, HF's `kernels`,
torch, numpy ...) through a path entry, so nothing is downloaded; hearth itself comes only from
the wheel. The slow test does the README's set-up command for real: a fresh environment that
installs the wheel and its dependencies from the registry, then `hearth serve`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Imports the newest transformers (which imports HF's `kernels`) and runs a model with it, then
# runs hearth in the same process; prints where everything came from.
BOTH_IN_ONE_PROCESS = r"""
import json, sys
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
import kernels

cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1)
logits = LlamaForCausalLM(cfg).eval()(torch.tensor([[1, 2, 3]])).logits
assert logits.shape == (1, 3, 64)
assert hasattr(kernels, "get_kernel"), kernels.__file__  # HF's package, not a look-alike

from hearth import LLM, SamplingParams
import hearth.engine.frontends.llm, hearth.kernels.cpu
out = LLM().generate("def f(x):", SamplingParams(max_tokens=4, temperature=0))[0].outputs[0]
assert len(out.token_ids) == 4
print(json.dumps({"kernels": kernels.__file__, "transformers": transformers.__version__,
                  "hearth": hearth.engine.frontends.llm.__file__, "ext": hearth.kernels.cpu._C.__file__,
                  "text": out.text}))
"""


def _run(cmd: list[str], cwd: Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a build folder of its own: the editable install's build/ is left alone
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(out), "-C", f"build-dir={out / 'build'}"], cwd=out)
    (path,) = out.glob("hearth-*.whl")
    return path


def _is_ours(path: str) -> bool:
    """Whether a module file is one of the repository's own folders (CI's venv may sit inside it)."""
    return Path(path).resolve().is_relative_to(ROOT / "kernels")


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed; this environment's packages visible behind it."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(venv)], cwd=venv)
    python = _venv_python(venv)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv).stdout
    # a plain path line: this environment's site-packages go on sys.path after the venv's own, and
    # its .pth files (the editable hearth's import hook among them) are not run
    Path(site.strip(), "zz_outer_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)], cwd=venv)
    return venv


def test_wheel_installs_only_the_hearth_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"hearth", "hearth-0.1.0.dist-info"}, sorted(top)
    # the parts, the compiled extension and the bundled model are inside it
    for expected in ("hearth/__init__.py", "hearth/cli.py", "hearth/engine/frontends/llm.py",
                     "hearth/server/app.py", "hearth/benchmarks/cli.py", "hearth/kernels/reference.py",
                     "hearth/engine/default_model/model.safetensors"):
        assert expected in names, expected
    assert any(n.startswith("hearth/kernels/cpu/_C") and n.endswith(".so") for n in names)
    entry_points = zipfile.ZipFile(wheel).read("hearth-0.1.0.dist-info/entry_points.txt").decode()
    assert "hearth = hearth.cli:main" in entry_points


@pytest.mark.parametrize("where", ["elsewhere", "repository root"])
def test_installed_hearth_beside_transformers_and_hf_kernels(installed, where, tmp_path):
    # from the repository root, python puts the root first on sys.path: its engine/, kernels/ ...
    # folders must shadow nothing, and its hearth/ folder must not hide the installed parts
    cwd = ROOT if where == "repository root" else tmp_path
    proc = _run([str(_venv_python(installed)), "-c", BOTH_IN_ONE_PROCESS], cwd=cwd)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not _is_ours(seen["kernels"]) and "site-packages" in seen["kernels"], seen
    assert int(seen["transformers"].split(".")[0]) >= 5, seen  # the release that brought HF's kernels
    assert seen["hearth"].startswith(str(installed)) and seen["ext"].startswith(str(installed)), seen
    cli = _run([str(installed / "bin" / "hearth"), "generate", "def f(x):", "--max-tokens", "4",
                "--temperature", "0"], cwd=cwd)
    assert cli.stdout.strip(), cli.stderr


def test_editable_checkout_beside_transformers_and_hf_kernels():
    # this environment (CI's: `pip install -e`), from the repository root: the failure this
    # layout fixes was `ImportError: cannot import name 'CUDAProperties' from 'kernels'`
    proc = _run([sys.executable, "-c", BOTH_IN_ONE_PROCESS], cwd=ROOT)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not _is_ours(seen["kernels"]) and "site-packages" in seen["kernels"], seen


@pytest.mark.slow
def test_readme_setup_serves_from_a_fresh_environment(wheel, tmp_path):
    """README set-up command 1, `pip install .` then `hearth serve`, with the dependencies from
    the registry into an empty venv (the wheel stands in for `.`: the same build)."""
    import httpx

    from tests.server.conftest import free_port

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    _run([str(_venv_python(venv)), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path, timeout=1200)
    port = free_port()
    proc = subprocess.Popen([str(venv / "bin" / "hearth"), "serve", "--port", str(port)], cwd=tempfile.gettempdir(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={k: v for k, v in os.environ.items() if k != "HEARTH_API_KEY"})  # no key: open
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            time.sleep(0.2)
        body = {"model": "hearth-pystdlib", "prompt": "def fibonacci(n):", "max_tokens": 8, "temperature": 0}
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8
    finally:
        proc.terminate()
        proc.wait(timeout=60)
