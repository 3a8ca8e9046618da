"""Shared benchmark plumbing: the commit, suite flag defaults, and random-weight checkpoints in
the shapes of real models. (Ceilings: ceilings.py; the result schema: schema.py.)"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np

ROOT = Path(__file__).resolve().parent
SHAPES = ROOT / "model_shapes"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def with_defaults(args, defaults: dict[str, tuple], quick: bool, **fixed):
    """A copy of a suite's parsed flags with each flag the user left out (None) set to its
    full-run or --quick default: `defaults` maps flag names to (full, quick) values."""
    import argparse

    out = argparse.Namespace(**fixed)
    for name, (full, short) in defaults.items():
        given = getattr(args, name, None)
        setattr(out, name, given if given is not None else (short if quick else full))
    return out


# ------------------------------------------------------------------ random checkpoints

_ST_DTYPE = {np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


# ------------------------------------------------------------------ large random checkpoints, fast

def load_shape(spec: str | Path) -> tuple[str, dict]:
    """(name, config dict) of a shape: a name in benchmarks/model_shapes, or a path to a config.json."""
    path = Path(spec)
    if path.suffix != ".json" or not path.exists():
        path = SHAPES / f"{spec}.json"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in SHAPES.glob("*.json")))
            raise ValueError(f"unknown shape {spec!r}: give one of {known} or a path to a config .json")
    return path.stem, json.loads(path.read_text())


def checkpoint_layout(cfg: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    """Every tensor of a Hugging Face Llama-family checkpoint of config `cfg`, in file order, as
    (name, shape, random): norms are ones, everything else random."""
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    d = cfg.get("head_dim") or h // heads
    out = [("model.embed_tokens.weight", (v, h), True), ("model.norm.weight", (h,), False)]
    if not cfg.get("tie_word_embeddings"):
        out.append(("lm_head.weight", (v, h), True))
    bias = cfg.get("model_type") == "qwen2" or cfg.get("attention_bias")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,), False), (p + "post_attention_layernorm.weight", (h,), False)]
        out += [(p + f"self_attn.{n}_proj.weight", s, True)
                for n, s in (("q", (heads * d, h)), ("k", (kv * d, h)), ("v", (kv * d, h)), ("o", (h, heads * d)))]
        out += [(p + f"mlp.{n}_proj.weight", s, True) for n, s in (("gate", (inter, h)), ("up", (inter, h)),
                                                                    ("down", (h, inter)))]
        if bias:
            out += [(p + f"self_attn.{n}_proj.bias", (m,), True)
                    for n, m in (("q", heads * d), ("k", kv * d), ("v", kv * d))]
        if cfg.get("model_type") == "qwen3":
            out += [(p + "self_attn.q_norm.weight", (d,), False), (p + "self_attn.k_norm.weight", (d,), False)]
    return out


def tiled_random_checkpoint(shape: str | Path, out_dir: Path, dtype=ml_dtypes.bfloat16, seed: int = 0,
                            period: int = (1 << 20) + 7, chunk: int = 1 << 24) -> Path:
    """`random_checkpoint` for big shapes: every random tensor is a window, at a random offset, of
    one periodic sequence of N(0, 0.02) values with `period` elements (a prime-ish length, so rows
    do not repeat in step), streamed to disk in `chunk`-element pieces. Writing a 16 GB 8B
    checkpoint then costs what the disk costs, not minutes of random number generation. The
    numbers are fine for speed measurements, not for anything that looks at outputs."""
    _, cfg = load_shape(shape)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    block = (rng.standard_normal(period, dtype=np.float32) * 0.02).astype(dtype)
    # any window of `chunk` elements starting below `period`, as bytes (ml_dtypes has no buffer export)
    tiled = np.tile(block, -(-(period + chunk) // period)).view(np.uint8)
    size = dtype.itemsize
    layout = checkpoint_layout(cfg)
    header, offset = {}, 0
    for tname, tshape, _ in layout:
        nbytes = int(np.prod(tshape, dtype=np.int64)) * dtype.itemsize
        header[tname] = {"dtype": _ST_DTYPE[dtype], "shape": list(tshape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(out_dir / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, tshape, random in layout:
            left = int(np.prod(tshape, dtype=np.int64))
            if not random:
                f.write(np.ones(left, dtype).tobytes())
                continue
            start = int(rng.integers(period))
            while left:
                n = min(left, chunk)
                f.write(memoryview(tiled[start * size:(start + n) * size]))
                start, left = (start + n) % period, left - n
    _word_tokenizer(out_dir)
    return out_dir


def _word_tokenizer(out_dir: Path) -> None:
    """The three-word tokenizer of the random checkpoints (benchmarks feed token ids)."""
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": None}))
