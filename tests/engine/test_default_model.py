"""The bundled default model: it ships whole, loads with no argument, agrees with transformers on
held-out Python, and its held-out loss is the one its README states."""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hearth import LLM, SamplingParams
from hearth.engine.frontends.builder import DEFAULT_MODEL_DIR
from hearth.cli import main

REPO = Path(__file__).resolve().parents[2]
HELDOUT = REPO / "tests" / "data" / "default_model_heldout.json"
SHIPPED = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
           "generation_config.json", "README.md"}
LOGPROB_ATOL = 2e-3  # bf16 weights on both sides, fp32 compute: only the summation order differs


@pytest.fixture(scope="module")
def llm():
    return LLM(kv_cache_memory=64 << 20)


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return json.loads(HELDOUT.read_text())


def readme_figure(readme: str, label: str) -> float:
    """The number in the README's results-table row that starts with `label`."""
    m = re.search(rf"^\| {re.escape(label)}[^|]*\| ([0-9.]+)", readme, re.MULTILINE)
    assert m, f"no '{label}' row in the README"
    return float(m.group(1))


def hearth_loss(llm: LLM, texts: list[str]) -> float:
    """Mean next-token loss (nats) of the texts under hearth, from prompt log-probs."""
    total, count = 0.0, 0
    for text in texts:
        out = llm.generate(text, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0))[0]
        ids = out.prompt_token_ids
        total -= sum(out.prompt_logprobs[j][ids[j]].logprob for j in range(1, len(ids)))
        count += len(ids) - 1
    return total / count


def test_shipped_files_are_complete_small_and_bf16():
    assert SHIPPED <= {p.name for p in DEFAULT_MODEL_DIR.iterdir()}
    assert sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()) <= 25_000_000
    raw = (DEFAULT_MODEL_DIR / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    shapes = {k: v for k, v in header.items() if k != "__metadata__"}
    assert {v["dtype"] for v in shapes.values()} == {"BF16"}
    assert 5e6 <= sum(math.prod(v["shape"]) for v in shapes.values()) <= 15e6
    tok_cfg = json.loads((DEFAULT_MODEL_DIR / "tokenizer_config.json").read_text())
    assert tok_cfg["chat_template"]


def test_llm_with_no_argument_loads_the_bundled_model(llm):
    assert llm.config.model_dir == DEFAULT_MODEL_DIR
    assert llm.config.model.architecture == "LlamaForCausalLM"
    assert llm.config.model.num_key_value_heads < llm.config.model.num_attention_heads  # GQA
    text = llm.generate("def fibonacci(n):", SamplingParams(max_tokens=24, temperature=0))[0].outputs[0].text
    assert text.strip()


def test_tokenizer_and_logprobs_match_transformers(llm, hf, heldout):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    worst = 0.0
    for doc in heldout[:3]:
        ids = llm.tokenizer.encode(doc["text"])
        assert ids == hf_tok(doc["text"])["input_ids"]
        out = llm.generate(ids, SamplingParams(max_tokens=1, prompt_logprobs=3, temperature=0))[0]
        with torch.no_grad():
            ref = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), dim=-1).numpy()
        for j in range(1, len(ids)):
            for tid, lp in out.prompt_logprobs[j].items():
                worst = max(worst, abs(lp.logprob - ref[j - 1, tid]))
    assert worst < LOGPROB_ATOL, f"max |logprob diff| {worst}"


@pytest.fixture(scope="module")
def heldout_loss(llm, heldout) -> float:
    """hearth's bf16 loss on the shipped held-out sample."""
    return hearth_loss(llm, [d["text"] for d in heldout])


def test_heldout_loss_is_the_readme_figure_and_beats_unigram(heldout_loss):
    readme = (DEFAULT_MODEL_DIR / "README.md").read_text()
    stated = readme_figure(readme, "held-out sample loss")
    ours = heldout_loss
    assert abs(ours - stated) <= 0.02 * stated, f"hearth {ours:.4f} vs README {stated:.4f}"
    unigram = math.log(readme_figure(readme, "unigram model held-out perplexity"))
    assert readme_figure(readme, "held-out loss") < 0.6 * unigram  # genuinely trained


def test_greedy_completions_match_transformers(llm, hf):
    for prompt in ("def fibonacci(n):", "import sys\n\n\ndef main():"):
        ids = llm.tokenizer.encode(prompt)
        ours = llm.generate(ids, SamplingParams(max_tokens=48, temperature=0, ignore_eos=True))[0].outputs[0]
        with torch.no_grad():
            x = torch.tensor([ids])  # explicit mask: BOS shares its id with pad and must stay visible
            ref = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=48, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
        assert list(ours.token_ids) == ref


def test_cli_generate_without_a_model_uses_the_bundled_one(llm, capsys):
    assert main(["generate", "def fibonacci(n):", "--max-tokens", "12", "--temperature", "0"]) == 0
    expect = llm.generate("def fibonacci(n):", SamplingParams(max_tokens=12, temperature=0))[0].outputs[0].text
    assert capsys.readouterr().out == expect + "\n"
    assert main(["generate", "a", "b", "c"]) == 2
    assert "[MODEL] PROMPT" in capsys.readouterr().err


def test_training_script_smoke_run_loads_in_hearth(tmp_path):
    """The whole training pipeline on a few stdlib files with a toy model, then hearth on its output."""
    out, sample = tmp_path / "model", tmp_path / "sample.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "train_default_model.py"), "--smoke",
                    "--out", str(out), "--eval-sample", str(sample)], check=True, capture_output=True)
    assert SHIPPED <= {p.name for p in out.iterdir()}
    stated = readme_figure((out / "README.md").read_text(), "held-out sample loss")
    docs = json.loads(sample.read_text())
    assert docs and np.isfinite(stated)
    ours = hearth_loss(LLM(str(out), kv_cache_memory=8 << 20), [d["text"] for d in docs])
    assert abs(ours - stated) <= 0.02 * stated


# perplexity of the quantized bundled model over bf16's, at most (the issue's accuracy bar)
QUANT_PPL_RATIO = {"q8_0": 1.01, "q4_0": 1.08}


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantized_heldout_perplexity_stays_close_to_bf16(heldout_loss, heldout, fmt):
    quantized = LLM(quantization=fmt, kv_cache_memory=64 << 20)
    ratio = math.exp(hearth_loss(quantized, [d["text"] for d in heldout]) - heldout_loss)
    assert ratio <= QUANT_PPL_RATIO[fmt], f"{fmt}: perplexity {ratio:.4f}x bf16's"
