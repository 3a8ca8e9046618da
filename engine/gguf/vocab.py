"""A Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json, chat template) as the
``tokenizer.*`` metadata llama.cpp's converter writes.

Byte-level BPE tokenizers become the ``gpt2`` model (tokens, types, merges, and the ``pre`` name
of their split regex); SentencePiece-style ones (Metaspace, byte fallback) become the ``llama``
model, whose scores rank the pieces the way the merges do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer

from hearth.engine.gguf.tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    PRE_TOKENIZERS,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
)

log = logging.getLogger("hearth")

# split regex -> the tokenizer.ggml.pre name llama.cpp gives the tokenizers that use it
_PRE_BY_REGEX = {PRE_TOKENIZERS[name].regexes[0]: name for name in ("llama-bpe", "qwen2", "tekken", "gpt-2")}
# the special-token kinds SpecialVocab looks up, and the GGUF key each id goes to
SPECIAL_KINDS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
                 "sep": "seperator_token_id", "pad": "padding_token_id", "mask": "mask_token_id"}


@dataclass
class GGUFVocab:
    """The tokenizer.* values to write."""

    model: str  # "gpt2" or "llama"
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str | None = None
    scores: list[float] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # "bos" -> id, ...
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = True
    chat_template: str | list[dict[str, str]] | None = None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _pre_tokenizer_parts(node: dict | None) -> list[dict]:
    if not node:
        return []
    return list(node.get("pretokenizers", [node])) if node.get("type") == "Sequence" else [node]


def _byte_level_pre(spec: dict, source: Path) -> str:
    parts = _pre_tokenizer_parts(spec.get("pre_tokenizer"))
    splits = [p["pattern"].get("Regex") for p in parts if p.get("type") == "Split" and "pattern" in p]
    if splits:
        name = _PRE_BY_REGEX.get(splits[0])
        if name is None or len(splits) > 1:
            raise ValueError(f"{source}: the split regex {splits} is not one llama.cpp knows (Llama 3, Qwen2, "
                             "Tekken, GPT-2); a GGUF of it would tokenize differently")
        return name
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) and not p.get("add_prefix_space")
           for p in parts):
        return "gpt-2"  # llama.cpp's name for GPT-2's own split
    raise ValueError(f"{source}: unsupported byte-level pre-tokenizer {parts}")


def _looks_special(text: str) -> bool:
    # added tokens some checkpoints forget to flag as special (llama.cpp's rule of thumb)
    return text in ("<pad>", "<mask>") or (text.startswith("<|") and text.endswith("|>")) or (
        text.startswith("<｜") and text.endswith("｜>"))


def _token_table(backend: BackendTokenizer, vocab_size: int, byte_fallback: bool,
                 unk_id: int | None, source: Path) -> tuple[list[str], list[int]]:
    by_id = {i: t for t, i in backend.get_vocab(with_added_tokens=True).items()}
    if by_id and max(by_id) >= vocab_size:
        raise ValueError(f"{source}: the tokenizer has id {max(by_id)} but the model's vocab_size is {vocab_size}")
    added = backend.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:  # embedding rows no token uses (vocab padded to a round size)
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i == unk_id:
            tokens.append(text)
            types.append(UNKNOWN)
        elif i in added:
            special = added[i].special or _looks_special(added[i].content)
            # user-defined tokens are matched as plain text, so their spaces are real spaces
            tokens.append(added[i].content if special else added[i].content.replace("▁", " "))
            types.append(CONTROL if special else USER_DEFINED)
        else:
            is_byte = byte_fallback and len(text) == 6 and text.startswith("<0x") and text.endswith(">")
            tokens.append(text)
            types.append(BYTE if is_byte else NORMAL)
    return tokens, types


def _merges(spec: dict, source: Path) -> list[tuple[str, str]]:
    out = []
    for m in spec["model"].get("merges") or []:
        pair = tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
        if len(pair) != 2 or any(" " in p for p in pair):
            raise ValueError(f"{source}: merge {m!r} cannot be written to GGUF (a space inside a piece)")
        out.append(pair)
    return out


def _piece_scores(tokens: list[str], types: list[int], merges: list[tuple[str, str]]) -> list[float]:
    """SentencePiece-style scores: the piece made by merge r scores -r, so "highest score merges
    first" (llama.cpp's rule) replays the merge order; other normal pieces rank below every merge."""
    rank: dict[str, int] = {}
    for r, (left, right) in enumerate(merges):
        rank.setdefault(left + right, r)
    scores = []
    for i, (tok, kind) in enumerate(zip(tokens, types)):
        if kind != NORMAL:
            scores.append(0.0)  # bytes, control and unknown pieces score 0 in SentencePiece models
        else:
            scores.append(-float(rank[tok]) if tok in rank else -float(len(merges) + i))
    return scores


def _space_prefix(spec: dict, source: Path) -> bool:
    """Whether a SentencePiece-style tokenizer puts "▁" before the text (GGUF's add_space_prefix)."""
    metaspace = next((p for p in _pre_tokenizer_parts(spec.get("pre_tokenizer")) if p.get("type") == "Metaspace"),
                     None)
    if metaspace is None:  # Llama 2's form: a Prepend("▁") normalizer
        norm = spec.get("normalizer") or {}
        steps = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
        return any(step.get("type") == "Prepend" for step in steps)
    scheme = metaspace.get("prepend_scheme", "always" if metaspace.get("add_prefix_space", True) else "never")
    if scheme == "first":
        log.warning("%s: Metaspace(prepend_scheme='first') has no GGUF equivalent; llama.cpp (and hearth reading "
                    "the GGUF) also put '▁' before text that starts with a space and after special tokens",
                    source)
    return scheme != "never"


def _special_ids(model_dir: Path, backend: BackendTokenizer, config: dict[str, Any],
                 vocab_size: int) -> dict[str, int]:
    """Ids of bos/eos/...: the token named in tokenizer_config.json, else config.json's id."""
    tok_config = _read_json(model_dir / "tokenizer_config.json")
    ids: dict[str, int] = {}
    for kind in SPECIAL_KINDS:
        entry = tok_config.get(f"{kind}_token")
        text = entry.get("content") if isinstance(entry, dict) else entry
        found = backend.token_to_id(text) if isinstance(text, str) else None
        if found is None:
            value = config.get(f"{kind}_token_id")
            found = value if isinstance(value, int) and not isinstance(value, bool) else None
        if found is not None and 0 <= found < vocab_size:
            ids[kind] = found
    return ids


def _adds(spec: dict, ids: dict[str, int], backend: BackendTokenizer) -> tuple[bool, bool]:
    """(add_bos, add_eos) as the post-processor does them: hearth and transformers 5 follow
    tokenizer.json alone, so the file records what encoding really does."""
    post = spec.get("post_processor") or {}
    steps = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for step in steps:
        if step.get("type") != "TemplateProcessing" or not step.get("single"):
            continue
        single = step["single"]
        first = single[0].get("SpecialToken", {}).get("id")
        last = single[-1].get("SpecialToken", {}).get("id")
        id_of = backend.token_to_id
        return (first is not None and id_of(first) == ids.get("bos"),
                len(single) > 1 and last is not None and id_of(last) == ids.get("eos"))
    return False, False


def _chat_template(model_dir: Path) -> str | list[dict[str, str]] | None:
    """The default template (chat_template.jinja wins over tokenizer_config.json, as in
    transformers 5) plus named ones, in the form `GGUFWriter.add_chat_template` takes."""
    raw = _read_json(model_dir / "tokenizer_config.json").get("chat_template")
    templates: dict[str, str] = {}
    if isinstance(raw, str):
        templates["default"] = raw
    elif isinstance(raw, list):
        templates.update({t["name"]: t["template"] for t in raw if isinstance(t, dict) and "name" in t})
    extra = model_dir / "additional_chat_templates"
    if extra.is_dir():
        templates.update({p.stem: p.read_text(encoding="utf-8") for p in sorted(extra.glob("*.jinja"))})
    if (model_dir / "chat_template.jinja").is_file():
        templates["default"] = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if not templates:
        return None
    if list(templates) == ["default"]:
        return templates["default"]
    return [{"name": name, "template": text} for name, text in templates.items()]


def read_hf_vocab(model_dir: Path, config: dict[str, Any], vocab_size: int) -> GGUFVocab:
    """The GGUF tokenizer of `model_dir` with exactly `vocab_size` tokens (the embedding rows).

    Raises:
        ValueError: no tokenizer.json, or a tokenizer llama.cpp could not reproduce.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{model_dir} has no tokenizer.json; hearth convert needs the fast-tokenizer file")
    spec = _read_json(path)
    backend = BackendTokenizer.from_file(str(path))
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"{path}: a {model.get('type')} tokenizer cannot be converted; GGUF conversion "
                         "supports BPE (byte-level or SentencePiece-style)")
    kinds = {p.get("type") for p in _pre_tokenizer_parts(spec.get("pre_tokenizer"))}
    merges = _merges(spec, path)
    ids = _special_ids(model_dir, backend, config, vocab_size)
    add_bos, add_eos = _adds(spec, ids, backend)
    common: dict[str, Any] = {"special_ids": ids, "add_bos": add_bos, "add_eos": add_eos,
                              "chat_template": _chat_template(model_dir)}
    if "ByteLevel" in kinds:
        tokens, types = _token_table(backend, vocab_size, False, None, path)
        return GGUFVocab("gpt2", tokens, types, [f"{a} {b}" for a, b in merges],
                         pre=_byte_level_pre(spec, path), **common)
    if model.get("byte_fallback") or "Metaspace" in kinds:
        unk = model.get("unk_token")
        tokens, types = _token_table(backend, vocab_size, bool(model.get("byte_fallback")),
                                     backend.token_to_id(unk) if unk else None, path)
        # the merges ride along (llama.cpp ignores them for this model) so readers need not rebuild them
        return GGUFVocab("llama", tokens, types, [f"{a} {b}" for a, b in merges],
                         scores=_piece_scores(tokens, types, merges),
                         add_space_prefix=_space_prefix(spec, path), **common)
    raise ValueError(f"{path}: the tokenizer is neither byte-level BPE nor SentencePiece-style (Metaspace / "
                     "byte fallback); it cannot be written to GGUF")
