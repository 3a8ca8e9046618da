"""A `Tokenizer` rebuilt from the vocabulary a GGUF file stores (``tokenizer.ggml.*``).

Two models, as llama.cpp names them:

* ``gpt2``: byte-level BPE (Llama 3, Qwen2/3). Tokens are in the GPT-2 byte spelling, merges are
  stored, and ``tokenizer.ggml.pre`` names the regex that splits text before BPE runs.
* ``llama``: SentencePiece-style BPE (Llama 2, Mistral). Tokens carry scores; a piece with a
  higher score merges first, ``<0xXX>`` pieces spell bytes that have no piece of their own, and
  spaces become "▁" with one prepended to the text and after each special token (as llama.cpp
  and sentencepiece itself do).

Token types say which tokens are control tokens (special: matched whole, dropped when decoding
with skip_special_tokens) and which are user-defined (matched whole, kept).
"""

from __future__ import annotations

from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers import Tokenizer as BackendTokenizer

from hearth.engine.gguf import bytelevel
from hearth.engine.gguf.metadata import Metadata
from hearth.engine.tokenization.tokenizer import Tokenizer

# llama.cpp's token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# llama.cpp's "default" (a file that names no pre-tokenizer): these splits applied one after another
_DEFAULT_SPLITS = (r"[\p{P}\$\+<=>\^~\|]+", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                   r"\p{N}+", r"[0-9][0-9][0-9]")


class PreTokenizer:
    """How one ``tokenizer.ggml.pre`` value splits text, with llama.cpp's flags for it."""

    def __init__(self, *regexes: str, ignore_merges: bool = False, add_bos: bool = False, nfc: bool = False) -> None:
        self.regexes = regexes  # applied in turn, each splitting the pieces the previous one left
        self.ignore_merges = ignore_merges  # a split piece found whole in the vocabulary is one token
        self.add_bos = add_bos  # llama.cpp's default when the file has no add_bos_token key
        self.nfc = nfc  # the HF tokenizer of this family normalizes to NFC first


_LLAMA3 = PreTokenizer(_LLAMA3_SPLIT, ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer(_QWEN2_SPLIT, nfc=True)
_GPT2 = PreTokenizer(_GPT2_SPLIT)
# the names llama.cpp accepts for these splits (llama-vocab.cpp)
PRE_TOKENIZERS = {
    "llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3,
    "smaug-bpe": PreTokenizer(_LLAMA3_SPLIT),
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2,
    "tekken": PreTokenizer(_TEKKEN_SPLIT, ignore_merges=True, add_bos=True),
    "gpt-2": _GPT2, "phi-2": _GPT2,
    "default": PreTokenizer(*_DEFAULT_SPLITS),
}

# control tokens that end a turn in common chat formats; llama.cpp stops on these too
_END_OF_TURN = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<end_of_turn>",
                "<|end_of_text|>", "<EOT>")


class _Vocab:
    def __init__(self, meta: Metadata) -> None:
        self.source = meta.source
        self.tokens: list[str] = list(meta.get("tokenizer.ggml.tokens") or [])
        if not self.tokens:
            raise ValueError(f"{meta.source}: GGUF has no tokenizer (tokenizer.ggml.tokens is missing)")
        types = meta.get("tokenizer.ggml.token_type")
        self.types: list[int] = list(types) if types else [NORMAL] * len(self.tokens)
        if len(self.types) != len(self.tokens):
            raise ValueError(f"{meta.source}: {len(self.types)} token types for {len(self.tokens)} tokens")

    def special_id(self, meta: Metadata, key: str) -> int | None:
        value = meta.get(f"tokenizer.ggml.{key}")
        if value is None:
            return None
        if not 0 <= int(value) < len(self.tokens):
            raise ValueError(f"{self.source}: tokenizer.ggml.{key} = {value} is outside the vocabulary")
        return int(value)


def _byte_level(meta: Metadata, vocab: _Vocab) -> BackendTokenizer:
    pre_name = meta.get("tokenizer.ggml.pre", "default")
    pre = PRE_TOKENIZERS.get(pre_name)
    if pre is None:
        raise ValueError(f"{meta.source}: tokenizer.ggml.pre {pre_name!r} is not supported; "
                         f"supported: {', '.join(PRE_TOKENIZERS)}")
    spelled = bytelevel.alphabet()
    ids: dict[str, int] = {}
    for i, (tok, kind) in enumerate(zip(vocab.tokens, vocab.types)):
        # llama.cpp keeps control and user-defined tokens as plain text; a normal token outside the
        # byte alphabet is respelled so that BPE can reach it
        key = tok if kind in (CONTROL, USER_DEFINED) or set(tok) <= spelled else bytelevel.spell(tok)
        ids.setdefault(key, i)
    merges = []
    for m in meta.get("tokenizer.ggml.merges") or []:
        left, sep, right = m.partition(" ")
        if not sep or " " in right:
            raise ValueError(f"{meta.source}: malformed merge {m!r} in tokenizer.ggml.merges")
        merges.append((left, right))
    try:
        backend = BackendTokenizer(models.BPE(vocab=ids, merges=merges, ignore_merges=pre.ignore_merges))
    except Exception as e:  # noqa: BLE001 -- the Rust side reports bad merges as a bare Exception
        raise ValueError(f"{meta.source}: inconsistent byte-level vocabulary: {e}") from None
    if pre.nfc:
        backend.normalizer = normalizers.NFC()
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return backend


def merges_from_scores(vocab: _Vocab, scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's rule (join the adjacent pair whose joined piece
    scores highest): every split of a normal piece into two normal pieces, best piece first."""
    normal = {tok: i for i, (tok, kind) in enumerate(zip(vocab.tokens, vocab.types)) if kind == NORMAL}
    ranked = []
    for tok, i in normal.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[i], normal[left], normal[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece(meta: Metadata, vocab: _Vocab, unk: str | None) -> BackendTokenizer:
    scores = meta.get("tokenizer.ggml.scores")
    stored = meta.get("tokenizer.ggml.merges")
    if stored:  # hearth's converter stores the exact merges next to the scores
        merges = [tuple(m.split(" ", 1)) for m in stored]
    elif scores and len(scores) == len(vocab.tokens):
        merges = merges_from_scores(vocab, [float(s) for s in scores])
    else:
        raise ValueError(f"{meta.source}: a 'llama' tokenizer needs tokenizer.ggml.scores for every token")
    ids: dict[str, int] = {}
    for i, tok in enumerate(vocab.tokens):
        ids.setdefault(tok, i)
    try:
        model = models.BPE(vocab=ids, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    except Exception as e:  # noqa: BLE001 -- as above
        raise ValueError(f"{meta.source}: inconsistent SentencePiece vocabulary: {e}") from None
    backend = BackendTokenizer(model)
    add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    # SentencePiece (and llama.cpp) put "▁" before the text unconditionally, and again after every
    # special or user-defined token, so a normalizer does it: it runs on each stretch of text
    # between added tokens. (Metaspace(prepend_scheme="first") would skip both when the text
    # already starts with a space, and after special tokens.)
    steps_in = [normalizers.Prepend("▁")] if add_prefix else []
    backend.normalizer = normalizers.Sequence([*steps_in, normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(" ", 1, 0))  # the prepended space is not part of the text
    backend.decoder = decoders.Sequence(steps)
    return backend


def _post_processor(bos: tuple[str, int] | None, eos: tuple[str, int] | None):
    if bos is None and eos is None:
        return None
    first, last = ([f"{bos[0]}:0"] if bos else []), ([f"{eos[0]}:0"] if eos else [])
    pair_b = ([f"{bos[0]}:1"] if bos else []) + ["$B:1"] + ([f"{eos[0]}:1"] if eos else [])
    return processors.TemplateProcessing(
        single=" ".join([*first, "$A:0", *last]), pair=" ".join([*first, "$A:0", *last, *pair_b]),
        special_tokens=[t for t in (bos, eos) if t is not None])


def _chat_templates(meta: Metadata) -> dict[str, str]:
    templates = {}
    if meta.get("tokenizer.chat_template"):
        templates["default"] = meta.get("tokenizer.chat_template")
    for name in meta.get("tokenizer.chat_templates") or []:
        if meta.get(f"tokenizer.chat_template.{name}"):
            templates[name] = meta.get(f"tokenizer.chat_template.{name}")
    return templates


def build_tokenizer(meta: Metadata) -> Tokenizer:
    """The file's tokenizer, with its special tokens, BOS/EOS behaviour and chat templates.

    Raises:
        ValueError: no vocabulary, an unsupported tokenizer model or pre-tokenizer, inconsistent data.
    """
    vocab = _Vocab(meta)
    model = meta.get("tokenizer.ggml.model")
    ids = {name: vocab.special_id(meta, key) for name, key in (
        ("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"))}
    if model == "gpt2":
        backend = _byte_level(meta, vocab)
        default_bos = PRE_TOKENIZERS[meta.get("tokenizer.ggml.pre", "default")].add_bos
    elif model == "llama":
        if ids["unk_token"] is None and UNKNOWN in vocab.types:
            ids["unk_token"] = vocab.types.index(UNKNOWN)
        unk = vocab.tokens[ids["unk_token"]] if ids["unk_token"] is not None else None
        backend, default_bos = _sentencepiece(meta, vocab, unk), True
    else:
        raise ValueError(f"{meta.source}: tokenizer.ggml.model {model!r} is not supported; supported: "
                         "'gpt2' (byte-level BPE), 'llama' (SentencePiece)")
    named = {name: vocab.tokens[i] for name, i in ids.items() if i is not None}
    _register_added_tokens(backend, vocab, {ids[n] for n in named})
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", default_bos)) and ids["bos_token"] is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and ids["eos_token"] is not None
    post = _post_processor((named["bos_token"], ids["bos_token"]) if add_bos else None,
                           (named["eos_token"], ids["eos_token"]) if add_eos else None)
    if post is not None:
        backend.post_processor = post
    context = meta.arch_key("context_length")
    return Tokenizer(backend, special_tokens=named, chat_templates=_chat_templates(meta),
                     model_max_length=int(context) if context else None)


def _register_added_tokens(backend: BackendTokenizer, vocab: _Vocab, named_ids: set[int]) -> None:
    # Control tokens (and the named bos/eos/unk/pad) are matched whole and are special;
    # user-defined ones are matched whole but decode like text.
    special = [AddedToken(tok, special=True, normalized=False)
               for i, (tok, kind) in enumerate(zip(vocab.tokens, vocab.types)) if kind == CONTROL or i in named_ids]
    plain = [AddedToken(tok, special=False, normalized=False)
             for i, (tok, kind) in enumerate(zip(vocab.tokens, vocab.types))
             if kind == USER_DEFINED and i not in named_ids]
    if special:
        backend.add_special_tokens(special)
    if plain:
        backend.add_tokens(plain)


def stop_token_ids(meta: Metadata, tokenizer: Tokenizer) -> tuple[int, ...]:
    """EOS, then end-of-turn/message ids the file names, then control tokens that end a turn in
    common chat formats (llama.cpp stops on all of these)."""
    found: list[Any] = [meta.get(f"tokenizer.ggml.{k}") for k in ("eos_token_id", "eot_token_id", "eom_token_id")]
    types = meta.get("tokenizer.ggml.token_type") or []
    for text in _END_OF_TURN:
        i = tokenizer.token_to_id(text)
        if i is not None and i < len(types) and types[i] == CONTROL:
            found.append(i)
    return tuple(dict.fromkeys(int(i) for i in found if i is not None))
