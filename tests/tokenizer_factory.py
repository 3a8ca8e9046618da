"""Build small, deterministic Hugging Face tokenizer directories for tests.

Tests never download a tokenizer: they train one here in well under a second on a built-in corpus
and save it the way a Hub checkpoint ships it (tokenizer.json, tokenizer_config.json,
special_tokens_map.json and, with transformers 5, chat_template.jinja).

Two kinds mirror the two families the engine must serve:

* ``"byte_level"``: byte-level BPE like Llama 3 / Qwen2 (regex split + ByteLevel pre-tokenizer and
  decoder). With ``add_bos=True`` a TemplateProcessing post-processor prepends ``<s>`` (Llama 3);
  with ``add_bos=False`` there is no BOS at all and the post-processor is ByteLevel (Qwen2).
* ``"byte_fallback"``: sentencepiece-style BPE like Llama 2 / Mistral: Metaspace pre-tokenizer,
  ``byte_fallback=True`` with the 256 ``<0xXX>`` pieces, decoder Replace/ByteFallback/Fuse/Strip.

The returned size (``len(tokenizer)``, added tokens included) always equals ``vocab_size``, so a
model config built with the same ``vocab_size`` covers every id. In both kinds ``<s>`` is id 1
(`BOS_ID`) and ``</s>`` is id 2 (`EOS_ID`); id 0 is ``<pad>`` (byte_level) or ``<unk>``
(byte_fallback). Training takes ~20 ms; the first call also imports transformers (~2 s) to save.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections import Counter
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as RustTokenizer

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
# Both kinds put BOS and EOS at the same ids (Llama 2 layout), so one model config fits either.
BOS_ID, EOS_ID = 1, 2

# Marker tokens used by the chat templates below; they are added as special tokens so that
# rendering + encoding a chat keeps them whole, as real chat checkpoints do.
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

# Llama 3's split regex (also close to Qwen2's): letters, numbers in groups of 1-3, punctuation, spaces.
_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATES = {
    # Qwen2-style ChatML: no BOS in the prompt.
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # Llama-3-style headers; the template itself writes the BOS (so encode it without specials).
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
        " + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    # Mistral / Llama-2 [INST] style, with the usual role-alternation check via raise_exception.
    "mistral": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
}

_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A paged KV cache stores keys and values in fixed-size blocks.",
    "Continuous batching lets new requests join while others are still decoding.",
    "She said: \"it's fine, we'll ship it tomorrow\" and closed the laptop.",
    "Numbers like 3.14159, 2048 and 1e-5 show up in configuration files.",
    "Tokenizers split text into pieces; the model only ever sees integers.",
    "Why didn't the scheduler preempt the newest request first?",
    "Hello world! Hello again, world. Goodbye, cruel world...",
    "   Leading spaces, trailing spaces, and\ttabs\tare whitespace too.   ",
    "Email me at someone@example.com or visit https://example.com/docs?x=1&y=2.",
]
_CODE = [
    "def forward(self, hidden_states, positions):",
    "    residual = hidden_states",
    "    for layer in self.layers:",
    "        hidden_states = layer(hidden_states, positions)",
    "    return self.norm(hidden_states + residual)",
    "import numpy as np",
    "x = np.zeros((4, 8), dtype=np.float32)  # [num_tokens, hidden_size]",
    "if __name__ == \"__main__\":\n    main()",
    "result = {\"id\": 42, \"tokens\": [1, 2, 3], \"ok\": True}",
    "while i < n and not done: i += 1",
]
_MULTIBYTE = [
    "Café, naïve, façade, jalapeño, Straße, smörgåsbord.",
    "Ελληνικά κείμενα και ρωσικий текст тоже.",
    "日本語のテキストと中文文本混在しています。",
    "你好，世界！今天天气很好。",
    "한국어 문장도 조금 있습니다.",
    "Emoji: 😀 🚀 🎉 👍🏽 ❤️ 🇫🇷 and more 🙂",
    "Math: ∑ x² ≤ ∞, α β γ δ, → ← ⇒",
    "Prices: 5€, £3, ¥100, ₹20 — em dash and ellipsis…",
]


_SYLLABLES = ["ka", "to", "ri", "mu", "sel", "dor", "ven", "qui", "lo", "zan", "pré", "für", "ño", "ship", "tra"]


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    """A few hundred deterministic lines: the base lines, fixed pairings of them, and pseudo-words.

    The pseudo-words (seeded, so identical on every run) give the trainer enough distinct merges
    to reach vocabularies of a few thousand tokens.
    """
    base = _ENGLISH + _CODE + _MULTIBYTE
    lines = list(base)
    rng = random.Random(0)
    for _ in range(300):
        words = ("".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(8))
        lines.append(" ".join(words))
    # Pair lines from different groups so merges span group boundaries; itertools.product is
    # ordered, so the corpus (and therefore the trained vocabulary) is identical on every run.
    for a, b in itertools.product(_ENGLISH, _CODE + _MULTIBYTE):
        lines.append(f"{a} {b}")
    for a, b in itertools.product(_CODE, _MULTIBYTE):
        lines.append(f"{a}\n{b}")
    return tuple(lines)


def build_tokenizer(
    out_dir: str | Path,
    kind: str = "byte_level",
    vocab_size: int = 400,
    *,
    add_bos: bool = True,
    chat_template: str | None = "auto",
) -> int:
    """Train a tokenizer of exactly ``vocab_size`` tokens and save it as an HF directory.

    Args:
        out_dir: directory to write (created if missing).
        kind: ``"byte_level"`` (Llama 3 / Qwen2 style) or ``"byte_fallback"`` (Llama 2 / Mistral).
        vocab_size: total size including special tokens (``len(tokenizer)``). ``byte_level`` takes
            300 to about 2700, ``byte_fallback`` 350 to over 4000 (it carries 256 ``<0xXX>`` pieces);
            outside that range it raises ValueError.
        add_bos: whether encoding with special tokens prepends ``<s>`` (Qwen-style: False).
        chat_template: ``"auto"`` (llama3 if byte_level+add_bos, chatml if byte_level without BOS,
            mistral for byte_fallback), a key of ``CHAT_TEMPLATES``, a literal Jinja template, or
            None for a tokenizer without a chat template.

    Returns:
        The final vocabulary size, equal to ``vocab_size``.
    """
    if kind == "byte_level":
        tok = _train_byte_level(vocab_size, add_bos)
    elif kind == "byte_fallback":
        tok = _train_byte_fallback(vocab_size, add_bos)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'byte_level' or 'byte_fallback'")
    size = tok.get_vocab_size(with_added_tokens=True)
    if size != vocab_size:
        raise ValueError(f"trained {size} tokens instead of vocab_size={vocab_size}; the corpus is too small")
    _save(tok, Path(out_dir), kind, add_bos, _resolve_template(chat_template, kind, add_bos))
    return size


def _resolve_template(chat_template: str | None, kind: str, add_bos: bool) -> str | None:
    if chat_template == "auto":
        chat_template = "mistral" if kind == "byte_fallback" else ("llama3" if add_bos else "chatml")
    if chat_template is None:
        return None
    return CHAT_TEMPLATES.get(chat_template, chat_template)


def _train_byte_level(vocab_size: int, add_bos: bool) -> RustTokenizer:
    specials = [PAD, BOS, EOS, *CHAT_MARKERS]  # ids 0, 1 (BOS_ID), 2 (EOS_ID), ...
    if vocab_size < 300:
        raise ValueError(f"byte_level needs vocab_size >= 300, got {vocab_size}")
    tok = RustTokenizer(models.BPE())
    if not add_bos:
        tok.normalizer = normalizers.NFC()  # Qwen2 normalizes to NFC
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, tok.token_to_id(BOS))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _train_byte_fallback(vocab_size: int, add_bos: bool) -> RustTokenizer:
    num_reserved = 3 + 256  # <unk> <s> </s> + one piece per byte, laid out like Llama 2
    if vocab_size < 350:
        raise ValueError(f"byte_fallback needs vocab_size >= 350, got {vocab_size}")
    num_markers = len(CHAT_MARKERS)
    num_learned = vocab_size - num_reserved - num_markers
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    # Train only the learned part (alphabet + merges). A small alphabet keeps rare characters
    # (most CJK/emoji) out of the vocabulary so that they really exercise the byte fallback. We pick
    # it ourselves: the trainer's own limit_alphabet breaks frequency ties in hash order, which
    # would make the vocabulary differ between runs.
    counts = Counter("".join(_corpus()).replace(" ", "▁").replace("\n", "") + "▁" * len(_corpus()))
    alphabet = sorted(counts, key=lambda ch: (-counts[ch], ch))[: num_learned // 3]
    learner = RustTokenizer(models.BPE())
    learner.pre_tokenizer = metaspace
    trainer = trainers.BpeTrainer(
        vocab_size=num_learned, initial_alphabet=alphabet, limit_alphabet=len(alphabet), show_progress=False
    )
    learner.train_from_iterator(_corpus(), trainer=trainer)
    learned = sorted(learner.get_vocab().items(), key=lambda item: item[1])
    vocab = {UNK: 0, BOS: 1, EOS: 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in learned:
        vocab.setdefault(piece, len(vocab))
    merges = _learned_merges(learner)
    tok = RustTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (UNK, BOS, EOS)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT_MARKERS])
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, 1)]
        )
    return tok


def _learned_merges(learner: RustTokenizer) -> list[tuple[str, str]]:
    merges = json.loads(learner.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def _save(tok: RustTokenizer, out_dir: Path, kind: str, add_bos: bool, chat_template: str | None) -> None:
    # Imported here so that merely importing this module stays cheap (transformers takes seconds).
    from transformers import PreTrainedTokenizerFast

    special = {"bos_token": BOS, "eos_token": EOS}
    special["unk_token" if kind == "byte_fallback" else "pad_token"] = UNK if kind == "byte_fallback" else PAD
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=CHAT_MARKERS,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        chat_template=chat_template,
        **special,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok.save_pretrained(str(out_dir))
    # transformers 5 no longer writes special_tokens_map.json, but Hub checkpoints (and transformers
    # 4) carry it; write the same named tokens so loaders that read it see a consistent picture.
    special["additional_special_tokens"] = CHAT_MARKERS
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
