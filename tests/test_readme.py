"""Every code block of README.md, run: a stale snippet fails here.

Python blocks run in a fresh interpreter each (a block that uses `LLM` without importing it gets
`from hearth import LLM, AsyncLLM, SamplingParams` first; top-level `await` is allowed, as in an
asyncio REPL). Shell blocks run line by line: `hearth serve` starts a real server (on a free port
of 127.0.0.1, which later lines of the block talk to in place of localhost:8000) that stops at
the end of the block; `hearth generate` and `hearth convert` run; `curl` runs against the server.
Placeholders become real files: path/to/... the bundled model's directory, MODEL a copy of it
whose config allows the 4096-token context the README's flags ask for, model-q8_0.gguf a
conversion of it, KEY an API key. What needs more than this machine is said per line:
`--device cuda` and the GPU set-up need a GPU (skipped without one); `hearth bench` lines are
parsed by the suite's own parser (tests/benchmarks/test_cli.py runs `bench all --quick`, this
file does not run the full-length suites); the set-up block's commands are .ci/run's and
test_packaging's slow test.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
KEY = "readme-key"


def _blocks() -> list[tuple[int, str, str]]:
    """(line number, language, body) of every fenced block."""
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


BLOCKS = _blocks()


def _gpu_usable() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Placeholder -> real path."""
    from hearth.engine.frontends.builder import DEFAULT_MODEL_DIR
    from hearth.engine.gguf import convert_to_gguf

    model = str(DEFAULT_MODEL_DIR)
    gguf = tmp_path_factory.mktemp("readme_gguf") / "model-q8_0.gguf"
    convert_to_gguf(model, str(gguf), "q8_0", progress=False)
    long = tmp_path_factory.mktemp("readme_model") / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, long)
    config = json.loads((long / "config.json").read_text())
    (long / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    return {"path/to/hf-model": model, "path/to/model": model, "model-q8_0.gguf": str(gguf), "MODEL": str(long),
            "KEY": KEY}


def _substitute(text: str, files: dict[str, str]) -> str:
    for name, path in files.items():
        text = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/-])", path, text)
    return text


def test_the_readme_has_the_blocks_this_file_runs():
    langs = [lang for _, lang, _ in BLOCKS]
    assert langs.count("python") >= 5 and langs.count("bash") >= 6, langs
    # a block is code (python, bash, or a `$ ` session without a language) or says it is text
    assert set(langs) <= {"python", "bash", "", "text"}, langs


PYTHON = [(line, body) for line, lang, body in BLOCKS if lang == "python"]


@pytest.mark.parametrize("line,body", PYTHON, ids=[f"line{n}" for n, _ in PYTHON])
def test_python_block(line, body, files, tmp_path):
    if 'device="cuda"' in body and not _gpu_usable():
        pytest.skip("needs a CUDA GPU (runs under pytest -m gpu on a device)")
    code = _substitute(body, files)
    if "import" not in code.split("\n", 1)[0]:
        code = "from hearth import LLM, AsyncLLM, SamplingParams\n" + code
    runner = ("import ast, asyncio, sys\n"
              "src = sys.stdin.read()\n"
              "code = compile(src, 'README.md', 'exec', flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)\n"
              "result = eval(code, {'__name__': '__main__'})\n"
              "if asyncio.iscoroutine(result):\n    asyncio.run(result)\n")
    proc = subprocess.run([sys.executable, "-c", runner], input=code, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"README.md line {line}:\n{code}\n{proc.stderr[-4000:]}"


def _commands(body: str, prompts_only: bool) -> list[str]:
    """The shell commands of a block: continuations joined, comments dropped; in a block of a
    session (`prompts_only`) only the lines after a `$ ` prompt, the rest being their output."""
    out = []
    for raw in body.replace("\\\n", " ").splitlines():
        raw = raw.strip()
        if raw.startswith("$ "):
            raw = raw[2:]
        elif prompts_only or not raw or raw.startswith("#"):
            continue
        words = shlex.split(raw, comments=True)
        if words:
            out.append(shlex.join(words))
    return out


class _Servers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []

    def start(self, words: list[str], cwd: Path) -> None:
        port = free_port()
        self.ports.append(port)
        words = list(words)
        for flag, value in (("--port", str(port)), ("--host", "127.0.0.1")):
            if flag in words:
                words[words.index(flag) + 1] = value
            else:
                words += [flag, value]
        proc = subprocess.Popen([str(Path(sys.executable).parent / "hearth"), *words[1:]], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{shlex.join(words)} never became healthy")

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def _run_line(command: str, files: dict[str, str], servers: _Servers, cwd: Path) -> str | None:
    """Runs one command; returns why it was not run, or None."""
    words = shlex.split(_substitute(command, files))
    if "venv" in command:
        return "the set-up commands: .ci/run runs the second, test_packaging's slow test the first"
    if words[0] == "pip" or words[:3] == ["python", "-m", "pytest"] or "bench_engine_gpu" in command \
            or "--device" in words and words[words.index("--device") + 1] == "cuda":
        return "needs a CUDA GPU (the GPU set-up and `pytest -m gpu` on a device)"
    if words[0] == "curl":
        # localhost:8000 is the block's first server, the plain `hearth serve`
        assert servers.ports, "curl before any hearth serve in its block"
        words = [w.replace("localhost:8000", f"127.0.0.1:{servers.ports[0]}") for w in words]
        key = ["-H", f"authorization: Bearer {KEY}"]
        proc = subprocess.run([*words, "-sS", "--fail-with-body", *key], capture_output=True, text=True,
                              timeout=120, cwd=cwd)
        assert proc.returncode == 0 and '"choices"' in proc.stdout, proc.stdout + proc.stderr
        return None
    assert words[0] == "hearth", f"a README command this test does not know: {command}"
    if words[1] == "serve":
        servers.start(words, cwd)
        return None
    if words[1] == "bench":
        from hearth.benchmarks.cli import build_parser

        # SystemExit on an unknown flag or suite; [--flag] is usage notation for an optional one
        build_parser().parse_args([w.strip("[]") for w in words[2:]])
        return "hearth bench: parsed, not run (its suites take minutes to hours)"
    if words[1] == "generate" and "--max-tokens" not in words:
        words += ["--max-tokens", "16"]
    proc = subprocess.run([str(Path(sys.executable).parent / "hearth"), *words[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{command} printed nothing"
    return None


SHELL = [(line, lang, body) for line, lang, body in BLOCKS if lang in ("bash", "")]


@pytest.mark.parametrize("line,lang,body", SHELL, ids=[f"line{n}" for n, _, _ in SHELL])
def test_shell_block(line, lang, body, files, tmp_path):
    commands = _commands(body, prompts_only=not lang)
    assert commands, f"README.md line {line}: no command found"
    for raw in body.splitlines():
        if "venv" in raw and "pytest" in raw:  # the README's test command is what CI runs
            assert raw.strip() in (ROOT / ".ci" / "run").read_text(), raw
    servers = _Servers()
    not_run = []
    try:
        for command in commands:
            why = _run_line(command, files, servers, tmp_path)
            if why:
                not_run.append(f"{command}: {why}")
    finally:
        servers.stop()
    if not_run and len(not_run) == len(commands):
        pytest.skip("; ".join(not_run))


def test_readme_does_not_import_the_old_top_level_packages():
    text = README.read_text()
    assert not re.search(r"^\s*(from|import) (engine|kernels|server|benchmarks)\b", text, re.M)
    assert os.path.exists(ROOT / ".ci" / "run") and shutil.which("curl")
