"""Train hearth's bundled default model: a small Llama on the local Python standard library.

Reproduce it (torch CPU, fixed seeds; see engine/default_model/README.md for the wall time):

    .venv/bin/python scripts/train_default_model.py

Steps: list the stdlib's .py files and hold out one in twenty (by a hash of its path); train a
byte-level BPE tokenizer on the training files with `tokenizers`; pack the tokenized files into one
stream (each file starts with <|endoftext|>); train a Hugging Face LlamaForCausalLM on random
windows of it with AdamW, bf16 autocast and a cosine schedule; evaluate on the held-out files and
against a unigram model; save config, bf16 safetensors, tokenizer, generation config and a README
with the figures; write a small held-out sample for hearth's tests.

`--smoke` runs the whole pipeline in seconds on a few files with a toy model (used by a test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sysconfig
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"
HELDOUT_EVERY = 20          # one file in twenty is held out for evaluation
MAX_FILE_BYTES = 256_000    # skip the few huge generated files (pydoc topics, codec tables)
# no trailing newline: "\n" and the indentation after it are one token in training
SAMPLE_PROMPTS = (
    "def fibonacci(n):",
    "import sys\n\n\ndef main():",
    "def read_lines(path):\n    with open(path) as f:",
)
SAMPLES_HEADING = "## Sample completions"
# Python-comment chat template: the model completes code, it was never tuned to chat
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] }}" + EOT + "\n"
    "{% else %}# {{ message['content'] | replace('\\n', '\\n# ') }}\n{% endif %}"
    "{% endfor %}"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]),
                   help="Python standard library to train on (default: this interpreter's)")
    p.add_argument("--out", type=Path, default=REPO / "engine" / "default_model", help="model directory to write")
    p.add_argument("--eval-sample", type=Path, default=REPO / "tests" / "data" / "default_model_heldout.json",
                   help="where to write the held-out sample that the tests evaluate")
    p.add_argument("--steps", type=int, default=2200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--intermediate-size", type=int, default=768)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-files", type=int, default=None, help="use only the first N files (smoke runs)")
    p.add_argument("--smoke", action="store_true", help="tiny everything: checks the pipeline in seconds")
    p.add_argument("--samples-only", action="store_true",
                   help="only regenerate the README's sample completions from the model in --out")
    args = p.parse_args()
    if args.smoke:
        args.__dict__.update(steps=4, batch_size=2, seq_len=64, vocab_size=400, hidden_size=64,
                             intermediate_size=128, layers=2, heads=2, kv_heads=1, max_files=args.max_files or 60)
    return args


# ---------------------------------------------------------------------------------------- data

def list_sources(stdlib: Path, max_files: int | None) -> list[tuple[str, str]]:
    """(path relative to stdlib, text) of every readable UTF-8 .py file, sorted by path."""
    out = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if {"site-packages", "dist-packages", "__pycache__"} & set(rel.parts):
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            out.append((rel.as_posix(), path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue  # a few test files are deliberately in other encodings
        if max_files is not None and len(out) >= max_files:
            break
    if not out:
        raise SystemExit(f"no Python sources found under {stdlib}")
    return out


def is_heldout(rel: str) -> bool:
    """Held-out split: a stable hash of the relative path, independent of the file list."""
    return int(hashlib.sha256(rel.encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenization) with <|endoftext|> prepended to every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, tok.token_to_id(EOT))])
    return tok


def pack(tok, texts: list[str]) -> np.ndarray:
    """All texts as one token stream, each starting with <|endoftext|>."""
    ids = [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(texts, add_special_tokens=True)]
    return np.concatenate(ids)


# --------------------------------------------------------------------------------------- model

def make_model(args: argparse.Namespace, eot_id: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.seq_len, rope_theta=10000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=None)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg)
    model.config._attn_implementation = "sdpa"
    return model


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to a tenth of the peak."""
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))


def windows_loss(model, stream: np.ndarray, seq_len: int, max_windows: int, bf16: bool) -> float:
    """Mean next-token loss (nats) over non-overlapping windows spread evenly through the stream."""
    import torch

    slots = (len(stream) - 1) // seq_len
    picks = np.linspace(0, slots - 1, num=min(max_windows, slots)).astype(np.int64) * seq_len
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for chunk in range(0, len(picks), 16):
            rows = [stream[s:s + seq_len + 1] for s in picks[chunk:chunk + 16]]
            batch = torch.from_numpy(np.stack(rows).astype(np.int64))
            logits = model(input_ids=batch[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                     reduction="sum")
            total, count = total + loss.item(), count + batch[:, 1:].numel()
    model.train()
    return total / count


def train(model, stream: np.ndarray, heldout: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """AdamW on random windows; returns the log (one record per logging interval)."""
    import torch

    rng = np.random.default_rng(args.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    log, t0, running = [], time.perf_counter(), []
    every = max(1, min(100, args.steps // 10))
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        starts = rng.integers(0, len(stream) - args.seq_len - 1, size=args.batch_size)
        batch = torch.from_numpy(np.stack([stream[s:s + args.seq_len + 1] for s in starts]).astype(np.int64))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=batch[:, :-1]).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == args.steps:
            rec = {"step": step + 1, "train_loss": float(np.mean(running)), "lr": opt.param_groups[0]["lr"],
                   "tokens": (step + 1) * args.batch_size * args.seq_len, "elapsed_s": time.perf_counter() - t0}
            if (step + 1) % (every * 5) == 0 or step + 1 == args.steps:
                rec["heldout_loss"] = windows_loss(model, heldout, args.seq_len, 16, bf16=True)
            log.append(rec)
            running = []
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}), flush=True)
    return log


# ---------------------------------------------------------------------------------- evaluation

def unigram_loss(train_stream: np.ndarray, heldout: np.ndarray, vocab_size: int) -> float:
    """Held-out loss (nats/token) of add-one-smoothed unigram frequencies from the training stream."""
    counts = np.bincount(train_stream, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[heldout[1:]].mean())


def make_eval_sample(tok, heldout_docs: list[tuple[str, str]], seq_len: int, count: int = 16) -> list[dict]:
    """A few held-out files, each cut at a line end to fit one window, for hearth's tests."""
    docs = sorted((d for d in heldout_docs if 1500 <= len(d[1]) <= 60_000),
                  key=lambda d: hashlib.sha256(d[0].encode()).hexdigest())[:count]
    sample = []
    for rel, text in docs:
        lines = text.splitlines(keepends=True)
        while len(tok.encode("".join(lines)).ids) > seq_len:
            lines = lines[:max(1, len(lines) * 3 // 4)] if len(lines) > 1 else lines
            if len(lines) == 1:
                break
        cut = "".join(lines)
        if len(tok.encode(cut).ids) <= seq_len:
            sample.append({"path": rel, "text": cut})
    return sample


def sample_loss(model, tok, sample: list[dict]) -> float:
    """Mean next-token loss over the sample's files (each with its leading <|endoftext|>), fp32."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for doc in sample:
            ids = torch.tensor([tok.encode(doc["text"]).ids])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    return total / count


def greedy_samples(model, tok, seq_len: int, max_new_tokens: int = 64) -> list[tuple[str, str]]:
    """(prompt, greedy completion) for each sample prompt."""
    import torch

    eot = tok.token_to_id(EOT)
    out = []
    with torch.no_grad():
        for prompt in SAMPLE_PROMPTS:
            ids = torch.tensor([tok.encode(prompt).ids])
            # explicit mask: the leading <|endoftext|> is also the pad id and must not be masked
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, eos_token_id=eot,
                                 pad_token_id=eot, max_new_tokens=min(max_new_tokens, seq_len - ids.shape[1]),
                                 )[0, ids.shape[1]:].tolist()
            out.append((prompt, tok.decode([t for t in gen if t != eot])))
    return out


# ------------------------------------------------------------------------------------- saving

def save_model(model, tok, args: argparse.Namespace) -> None:
    """config.json + bf16 model.safetensors + tokenizer files + generation_config.json."""
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    eot = tok.token_to_id(EOT)
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    tok.save(str(args.out / "tokenizer.json"))
    (args.out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT,
        "model_max_length": args.seq_len, "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    (args.out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": eot, "eos_token_id": eot, "do_sample": True, "temperature": 0.8, "top_p": 0.95},
        indent=2) + "\n")


def samples_markdown(samples: list[tuple[str, str]]) -> str:
    """The README's sample section: each prompt and its greedy completion."""
    body = "\n\n".join(f"```python\n{p}{c}\n```" for p, c in samples)
    return (f"{SAMPLES_HEADING}\n\nGreedy, 64 new tokens, prompts as in `SAMPLE_PROMPTS`. A model this small "
            "soon loops under greedy decoding; sampling (the generation_config defaults) wanders instead.\n\n"
            f"{body}\n")


def rewrite_samples(args: argparse.Namespace) -> None:
    """--samples-only: regenerate the README's samples from the saved model (no training)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(args.out / "tokenizer.json"))
    readme = (args.out / "README.md").read_text()
    head = readme[:readme.index(SAMPLES_HEADING)]
    (args.out / "README.md").write_text(head + samples_markdown(greedy_samples(model, tok, args.seq_len)))


def write_readme(args: argparse.Namespace, facts: dict) -> None:
    """The model card, with every figure from this run."""
    f = facts
    curve = "\n".join(f"| {r['step']} | {r['tokens']:,} | {r['train_loss']:.3f} | "
                      f"{r.get('heldout_loss', float('nan')):.3f} | {r['elapsed_s'] / 60:.1f} |"
                      for r in f["log"] if "heldout_loss" in r)
    text = f"""# hearth-pystdlib (hearth's default model)

A {f['params'] / 1e6:.1f} M-parameter Llama trained from scratch on the Python {f['python']} standard
library, shipped inside the `engine` package so that `LLM()` and the `hearth` commands work
with no model argument and no download. It completes Python code; it is far too small to know much, but it
writes recognisable Python. Its weights look like trained weights, so quantization and serving
tests can use it.

## Architecture

LlamaForCausalLM: {args.layers} layers, hidden {args.hidden_size}, MLP {args.intermediate_size} (SwiGLU),
{args.heads} query heads and {args.kv_heads} KV heads of dim {args.hidden_size // args.heads} (GQA), RoPE theta 10000,
context {args.seq_len} tokens, tied input/output embeddings, vocabulary {args.vocab_size}
(byte-level BPE trained with `tokenizers` on the training files). Stored in bf16
(model.safetensors, {f['file_mb']:.1f} MB). Every file starts with `<|endoftext|>`, which is also
the end-of-sequence token; the chat template turns messages into Python comments (this is a
completion model, never tuned to chat).

## Data

The `.py` files of the local Python {f['python']} standard library (license: PSF), UTF-8, under
{MAX_FILE_BYTES // 1000} kB each: {f['train_files']} training files ({f['train_tokens']:,} tokens) and
{f['heldout_files']} held-out files ({f['heldout_tokens']:,} tokens), one file in {HELDOUT_EVERY} held out
by a SHA-256 hash of its path. `tests/data/default_model_heldout.json` holds the beginnings of
{f['sample_files']} held-out files ({f['sample_tokens']:,} tokens) for the tests.

## Training

    .venv/bin/python scripts/train_default_model.py

{args.steps} AdamW steps (betas 0.9/0.95, weight decay 0.1, clip 1.0) of {args.batch_size} random windows of
{args.seq_len} tokens ({f['seen_tokens']:,} tokens, {f['epochs']:.2f} epochs), peak learning rate {args.lr}
with warm-up and cosine decay, bf16 autocast, seed {args.seed}, torch {f['torch']} on {f['threads']} CPU threads.
Wall time of the whole script (data, tokenizer, training, evaluation, saving): **{f['wall_min']:.1f} minutes**
on {f['machine']}.

| step | tokens seen | train loss | held-out loss (16 windows) | minutes of training |
|---:|---:|---:|---:|---:|
{curve}

## Results (fp32 compute on the stored bf16 weights)

| measure | value |
|---|---|
| final train loss ({f['eval_windows']} windows) | {f['train_loss']:.4f} nats/token |
| held-out loss (all {f['heldout_windows']} windows of {args.seq_len}) | {f['heldout_loss']:.4f} nats/token |
| held-out perplexity | {math.exp(f['heldout_loss']):.2f} |
| unigram model held-out perplexity | {math.exp(f['unigram_loss']):.1f} |
| held-out bits per byte | {f['heldout_loss'] / math.log(2) * f['heldout_tokens'] / f['heldout_bytes']:.3f} |
| held-out sample loss (tests/data/default_model_heldout.json) | {f['sample_loss']:.4f} nats/token |

{samples_markdown(f["samples"])}"""
    (args.out / "README.md").write_text(text)


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine type."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    import platform

    import torch

    t0 = time.perf_counter()
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.samples_only:
        rewrite_samples(args)
        return
    docs = list_sources(args.stdlib, args.max_files)
    train_docs = [d for d in docs if not is_heldout(d[0])]
    heldout_docs = [d for d in docs if is_heldout(d[0])]
    if args.smoke and not heldout_docs:
        heldout_docs = train_docs[-2:]
    tok = train_tokenizer([t for _, t in train_docs], args.vocab_size)
    train_stream, heldout = pack(tok, [t for _, t in train_docs]), pack(tok, [t for _, t in heldout_docs])
    print(f"{len(train_docs)} training files, {len(train_stream):,} tokens; {len(heldout_docs)} held out, "
          f"{len(heldout):,} tokens", flush=True)
    model = make_model(args, tok.token_to_id(EOT))
    log = train(model, train_stream, heldout, args)
    model.to(torch.bfloat16).to(torch.float32)  # evaluate exactly the weights that get saved
    n_windows = (len(heldout) - 1) // args.seq_len
    sample = make_eval_sample(tok, heldout_docs, args.seq_len)
    facts = {
        "params": sum(p.numel() for p in model.parameters()), "python": platform.python_version(),
        "train_files": len(train_docs), "heldout_files": len(heldout_docs), "train_tokens": len(train_stream),
        "heldout_tokens": len(heldout), "heldout_bytes": sum(len(t.encode()) for _, t in heldout_docs),
        "sample_files": len(sample), "sample_tokens": sum(len(tok.encode(d["text"]).ids) for d in sample),
        "seen_tokens": args.steps * args.batch_size * args.seq_len, "log": log, "threads": torch.get_num_threads(),
        "epochs": args.steps * args.batch_size * args.seq_len / len(train_stream), "torch": torch.__version__,
        "heldout_windows": n_windows, "eval_windows": n_windows,
        "heldout_loss": windows_loss(model, heldout, args.seq_len, n_windows, bf16=False),
        "train_loss": windows_loss(model, train_stream, args.seq_len, n_windows, bf16=False),
        "unigram_loss": unigram_loss(train_stream, heldout, args.vocab_size),
        "sample_loss": sample_loss(model, tok, sample), "samples": greedy_samples(model, tok, args.seq_len),
        "machine": f"{os.cpu_count()} cores of {cpu_name()}",
    }
    save_model(model, tok, args)
    args.eval_sample.parent.mkdir(parents=True, exist_ok=True)
    args.eval_sample.write_text(json.dumps(sample, indent=1) + "\n")
    facts["file_mb"] = (args.out / "model.safetensors").stat().st_size / 1e6
    facts["wall_min"] = (time.perf_counter() - t0) / 60
    write_readme(args, facts)
    (args.out / "training_log.json").write_text(json.dumps({k: v for k, v in facts.items() if k != "samples"},
                                                           indent=1) + "\n")
    print(f"held-out loss {facts['heldout_loss']:.4f} (unigram {facts['unigram_loss']:.4f}), "
          f"sample loss {facts['sample_loss']:.4f}, {facts['wall_min']:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
