"""hearth.engine.tokenization.tokenizer against transformers on tokenizers trained by tests/tokenizer_factory.py."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from hearth.engine.tokenization.detokenizer import IncrementalDetokenizer
from hearth.engine.tokenization.tokenizer import Tokenizer
from tests.tokenizer_factory import BOS_ID, EOS_ID, build_tokenizer

transformers = pytest.importorskip("transformers")

# name -> build_tokenizer arguments: Llama 3-like, Qwen2-like, Llama 2 / Mistral-like.
VARIANTS = {
    "byte_level": dict(kind="byte_level", add_bos=True),
    "byte_level_nobos": dict(kind="byte_level", add_bos=False),
    "byte_fallback": dict(kind="byte_fallback", add_bos=True),
}

TEXTS = [
    "Hello world",
    " Hello world",
    "",
    " ",
    "The quick brown fox jumps over the lazy dog.",
    "  multiple   spaces\t\ttabs\n\nnewlines\r\n end  ",
    "def f(x):\n    return {\"a\": [x, 2]}  # comment",
    "Café naïve façade Straße",
    "日本語のテキスト 中文 한국어",
    "Emoji 😀🚀 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧",
    "rare: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ ᚠᛇᚻ",  # characters outside the training corpus -> byte fallback
    "special <s> and </s> and <|im_end|> inside text",
    "e\u0301 vs \u00e9 (NFC matters for Qwen-like)",
]

CHATS = [
    [{"role": "user", "content": "Hello! 你好 😀"}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "  and times three?  "},
    ],
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    for name, kwargs in VARIANTS.items():
        build_tokenizer(root / name, vocab_size=400, **kwargs)
    return {name: root / name for name in VARIANTS}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, dirs):
    """(ours, transformers') loaded from the same directory."""
    path = dirs[request.param]
    return Tokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


# ---- factory ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["byte_level", "byte_fallback"])
@pytest.mark.parametrize("vocab_size", [384, 512, 1000])
def test_factory_exact_size_and_deterministic(tmp_path, kind, vocab_size):
    start = time.perf_counter()
    size = build_tokenizer(tmp_path / "a", kind, vocab_size)
    assert time.perf_counter() - start < 2.0
    build_tokenizer(tmp_path / "b", kind, vocab_size)
    assert size == vocab_size == len(Tokenizer.from_pretrained(tmp_path / "a"))
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()
    assert (tmp_path / "a/special_tokens_map.json").is_file()


def test_factory_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        build_tokenizer(tmp_path, "wordpiece")
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(tmp_path, "byte_fallback", 300)


# ---- encode / decode / vocabulary ---------------------------------------------------------------


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_matches_transformers(pair, add_special_tokens):
    ours, hf = pair
    for text in TEXTS:
        assert ours.encode(text, add_special_tokens) == hf.encode(text, add_special_tokens=add_special_tokens), text


def test_bos_follows_the_tokenizer_kind(dirs):
    for name in VARIANTS:
        tok = Tokenizer.from_pretrained(dirs[name])
        assert (tok.bos_token_id, tok.eos_token_id) == (BOS_ID, EOS_ID)
        assert (tok.encode("hi")[0] == BOS_ID) == VARIANTS[name]["add_bos"]
        assert BOS_ID not in tok.encode("hi", add_special_tokens=False)


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches_transformers(pair, skip_special_tokens):
    ours, hf = pair
    rng = random.Random(0)
    sequences = [hf.encode(text) for text in TEXTS]
    sequences += [[rng.randrange(len(hf)) for _ in range(rng.randint(1, 30))] for _ in range(200)]
    for ids in sequences:
        assert ours.decode(ids, skip_special_tokens) == hf.decode(ids, skip_special_tokens=skip_special_tokens), ids


def test_vocabulary_and_special_tokens_match(pair):
    ours, hf = pair
    assert ours.vocab_size == len(ours) == len(hf)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (
        hf.bos_token_id,
        hf.eos_token_id,
        hf.pad_token_id,
    )
    assert set(hf.all_special_ids) <= set(ours.all_special_ids)
    ids = list(range(len(hf)))
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(5) == hf.convert_ids_to_tokens(5)
    assert ours.token_to_id("</s>") == hf.convert_tokens_to_ids("</s>")
    assert ours.token_to_id("no such token at all") is None


# ---- chat templates -----------------------------------------------------------------------------


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("tokenize", [False, True])
def test_chat_template_matches_transformers(pair, add_generation_prompt, tokenize):
    ours, hf = pair
    for chat in CHATS:
        expected = hf.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=tokenize)
        if tokenize and isinstance(expected, Mapping):
            expected = expected["input_ids"]
        assert ours.apply_chat_template(chat, add_generation_prompt, tokenize) == expected


# A template exercising the HF extras: tojson with indent/non-ASCII, loop controls, kwargs, tools,
# `{% generation %}` blocks, None-valued keys dropped, reasoning aliases, strftime_now.
EXTRAS_TEMPLATE = """{% if tools %}TOOLS {{ tools | tojson(indent=2) }}
{% endif %}
{% for m in messages %}
{% if m.role == 'skip' %}{% continue %}{% endif %}
[{{ m.role }}{% if m.name is defined %}:{{ m.name }}{% endif %}]
{% if m.reasoning_content is defined %}<think>{{ m.reasoning_content }}</think>{% endif %}
{% generation %}{{ m.content | tojson }}{% endgeneration %}
{% if loop.index >= 3 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}[assistant]{% endif %}
extra={{ extra_flag }} bos={{ bos_token }} year={{ strftime_now('%Y') }}"""


def test_chat_template_extras_match_transformers(pair):
    ours, hf = pair
    tools = [{"type": "function", "function": {"name": "météo", "parameters": {"city": {"type": "string"}}}}]
    chat = [
        {"role": "user", "content": "Où est 東京? 😀", "name": None},
        {"role": "skip", "content": "hidden"},
        {"role": "assistant", "content": "ici", "reasoning": "thinking…"},
        {"role": "user", "content": "merci", "name": "bob"},
        {"role": "user", "content": "never shown"},
    ]
    kwargs = dict(chat_template=EXTRAS_TEMPLATE, tools=tools, extra_flag=True)
    expected = hf.apply_chat_template(chat, add_generation_prompt=True, tokenize=False, **kwargs)
    assert ours.apply_chat_template(chat, **kwargs) == expected


def test_template_raise_exception_becomes_value_error(dirs):
    tok = Tokenizer.from_pretrained(dirs["byte_fallback"])  # mistral template checks role order
    with pytest.raises(ValueError, match="roles must alternate"):
        tok.apply_chat_template([{"role": "assistant", "content": "hi"}])


def test_config_variants_match_transformers(dirs, tmp_path):
    """Config add_bos/add_eos flags, AddedToken dicts, list-form and file templates, as transformers reads them."""
    path = tmp_path / "variant"
    shutil.copytree(dirs["byte_level"], path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(
        add_bos_token=False,
        add_eos_token=True,
        bos_token={"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "special": True},
        chat_template=[{"name": "default", "template": "config {{ messages[0].content }}"}],
    )
    config_file.write_text(json.dumps(config))
    (path / "chat_template.jinja").write_text("file {{ messages[0].content }}{{ eos_token }}")
    ours, hf = Tokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)
    for text in TEXTS:
        assert ours.encode(text) == hf.encode(text)
    # transformers 5 ignores the flags when tokenizer.json exists: its post-processor still adds BOS only.
    assert ours.encode("hi")[0] == ours.bos_token_id and ours.encode("hi")[-1] != ours.eos_token_id
    chat = [{"role": "user", "content": "x"}]
    assert ours.apply_chat_template(chat) == hf.apply_chat_template(chat, tokenize=False) == "file x</s>"

    (path / "chat_template.jinja").unlink()
    assert Tokenizer.from_pretrained(path).apply_chat_template(chat) == "config x"


# ---- errors -------------------------------------------------------------------------------------


def test_missing_directory_or_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)


def test_no_chat_template(tmp_path):
    build_tokenizer(tmp_path, "byte_level", 400, chat_template=None)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.chat_template is None
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ("hello", "list"),
        ([], "non-empty"),
        (["hello"], r"messages\[0\]"),
        ([{"content": "hi"}], r"messages\[0\] has no 'role'"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], r"messages\[1\] has no 'content'"),
    ],
)
def test_bad_messages(dirs, messages, needle):
    tok = Tokenizer.from_pretrained(dirs["byte_level"])
    with pytest.raises(ValueError, match=needle):
        tok.apply_chat_template(messages)


def test_template_syntax_error_is_value_error(dirs):
    tok = Tokenizer.from_pretrained(dirs["byte_level"])
    with pytest.raises(ValueError, match="parse"):
        tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{% for %}")


# ---- incremental detokenizer --------------------------------------------------------------------


def _stream(tok: Tokenizer, ids: list[int], skip: bool) -> None:
    """Feed ids one by one and check the streaming invariants against decode(ids)."""
    expected = tok.decode(ids, skip_special_tokens=skip)
    detok = IncrementalDetokenizer(tok, skip_special_tokens=skip)
    deltas = []
    for token_id in ids:
        deltas.append(detok.add(token_id))
        # Emitted text is final: it can only grow into the full decode, never split a character.
        assert expected.startswith(detok.text), (ids, detok.text, expected)
    deltas.append(detok.flush())
    assert "".join(deltas) == detok.text == expected, (ids, deltas, expected)


@pytest.mark.parametrize("variant", ["byte_level", "byte_fallback"])
@pytest.mark.parametrize("skip", [True, False])
def test_detokenizer_random_ids(dirs, variant, skip):
    tok = Tokenizer.from_pretrained(dirs[variant])
    rng = random.Random(1234)
    # Byte-ish ids: the <0xXX> pieces, or for byte-level the single-byte tokens (which form invalid
    # UTF-8 when drawn at random), mixed with specials so skipping happens inside byte runs.
    byte_ids = sorted(tok.byte_fallback_ids) or list(range(len(tok.all_special_ids), 263))
    for trial in range(600):
        n = rng.randint(1, 40)
        if trial % 2:
            ids = [rng.randrange(len(tok)) for _ in range(n)]
        else:
            ids = [rng.choice(byte_ids) if rng.random() < 0.7 else rng.randrange(len(tok)) for _ in range(n)]
        _stream(tok, ids, skip)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_detokenizer_real_text(dirs, variant):
    tok = Tokenizer.from_pretrained(dirs[variant])
    for text in TEXTS:
        for add_special in (True, False):
            _stream(tok, tok.encode(text, add_special), skip=True)
            _stream(tok, tok.encode(text, add_special), skip=False)


def test_detokenizer_holds_partial_characters(dirs):
    tok = Tokenizer.from_pretrained(dirs["byte_fallback"])
    # ꙮ (EA 99 AE) is not in the corpus, so it is three byte pieces; "▁t" closes the run.
    ids = tok.encode("ꙮ the", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == ["▁", "<0xEA>", "<0x99>", "<0xAE>", "▁t", "h", "e"]
    detok = IncrementalDetokenizer(tok)
    assert [detok.add(i) for i in ids] == ["", "", "", "", "ꙮ t", "h", "e"]
    # A dangling byte is held until flush, which shows it the way decode does.
    detok = IncrementalDetokenizer(tok)
    assert detok.add(ids[1]) == "" and detok.flush() == tok.decode(ids[1:2]) == "\ufffd"


def test_detokenizer_prompt_context_keeps_leading_space(dirs):
    tok = Tokenizer.from_pretrained(dirs["byte_fallback"])
    prompt = tok.encode("Hello")
    full = tok.encode("Hello world again", add_special_tokens=True)
    assert full[: len(prompt)] == prompt
    generated = full[len(prompt) :]
    detok = IncrementalDetokenizer(tok, prompt_ids=prompt)
    text = "".join(detok.add(i) for i in generated) + detok.flush()
    assert text == " world again"
    assert tok.decode(generated) == "world again"  # what the default (no prompt) mode matches


def test_detokenizer_window_stays_small(dirs):
    """Each step decodes a short window, not the whole sequence (O(1) amortized)."""
    tok = Tokenizer.from_pretrained(dirs["byte_level"])
    ids = tok.encode(" ".join(TEXTS) * 20, add_special_tokens=False)
    assert len(ids) > 1000
    longest = 0
    original_decode = tok.decode

    def spy(window, skip_special_tokens=True):
        nonlocal longest
        longest = max(longest, len(window))
        return original_decode(window, skip_special_tokens)

    tok.decode = spy
    detok = IncrementalDetokenizer(tok)
    text = "".join(detok.add(i) for i in ids) + detok.flush()
    tok.decode = original_decode
    assert text == tok.decode(ids)
    assert longest <= 16
