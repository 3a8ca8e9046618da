"""Small command-line behaviours: escapes in `--stop`, the served model id of a GGUF file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hearth import SamplingParams
from hearth.cli import unescape
from hearth.server.endpoint.spec import served_model_name


@pytest.mark.parametrize("raw, text", [
    (r"\n\n", "\n\n"), (r"a\tb", "a\tb"), (r"\\n", "\\n"), (r"\u00e9t\u00e9", "été"), (r"\x41", "A"),
    (r"\q", r"\q"), ("\\", "\\"), (r"\u12", r"\u12"), (r"\ud800", r"\ud800"), ("plain", "plain"),
])
def test_unescape(raw, text):
    assert unescape(raw) == text


def test_generate_stop_is_unescaped(tiny_model_dir, tiny_llm):
    params = SamplingParams(max_tokens=60, temperature=0)
    full = tiny_llm.generate("def f(x):", params)[0].outputs[0].text
    # the random model's text: stop at a character of it, written as an escape
    stop_char = next(c for c in full[5:] if c.isprintable() and c.strip() and ord(c) < 0xD800)
    out = subprocess.run([sys.executable, "-m", "hearth", "generate", str(tiny_model_dir), "def f(x):",
                          "--max-tokens", "60", "--temperature", "0", "--stop",
                          f"\\u{ord(stop_char):04x}", "--max-model-len", "256"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == full.split(stop_char)[0] + "\n"


def test_served_model_name():
    assert served_model_name("/models/SmolLM2-135M-Instruct.Q4_1.gguf", None) == "SmolLM2-135M-Instruct.Q4_1"
    assert served_model_name("/models/x.GGUF", None) == "x"
    assert served_model_name("/models/llama-dir", None) == "/models/llama-dir"
    assert served_model_name("/models/x.gguf", "mine") == "mine"
    assert served_model_name(None, None) == "hearth-pystdlib"
