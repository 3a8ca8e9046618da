"""Text <-> token ids for a Hugging Face model directory, without transformers.

`Tokenizer` wraps a `tokenizers.Tokenizer` loaded from ``tokenizer.json`` and reproduces what
transformers' ``AutoTokenizer`` does on top of it (see `Tokenizer.from_pretrained`), plus chat
templates rendered with jinja2 the way ``apply_chat_template`` renders them. Streaming text out
of generated ids is `hearth.engine.tokenization.detokenizer.IncrementalDetokenizer`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from tokenizers import AddedToken
from tokenizers import Tokenizer as BackendTokenizer

from hearth.engine.tokenization.chat_template import compile_template, plain, validate_messages

# transformers' SPECIAL_TOKENS_ATTRIBUTES: the named special tokens a chat template can see.
_NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

__all__ = ["Tokenizer"]


_GIL_FREE_CHARS = 2048  # above this, encode through the GIL-releasing batch path


class Tokenizer:
    """A fast tokenizer with the special tokens and chat templates of a model directory.

    Encoding, decoding and chat rendering agree with transformers 5 ``AutoTokenizer`` on the same
    files. Build it with `Tokenizer.from_pretrained`; the constructor is for loaders that already
    hold a backend (e.g. one converted from GGUF metadata).
    """

    def __init__(
        self,
        backend: BackendTokenizer,
        special_tokens: Mapping[str, str] | None = None,
        chat_templates: Mapping[str, str] | None = None,
        model_max_length: int | None = None,
    ) -> None:
        self._backend = backend
        self._special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self._chat_templates = dict(chat_templates or {})
        self.model_max_length = model_max_length
        added = backend.get_added_tokens_decoder()
        # The ids that decode(skip_special_tokens=True) drops: added tokens flagged special.
        self._special_ids = frozenset(i for i, tok in added.items() if tok.special)
        self._byte_fallback_ids = _find_byte_fallback_ids(backend)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> Tokenizer:
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``, ``chat_template.jinja``) from a directory.

        Matches transformers 5 on the same files:
        * every named special token (bos/eos/unk/pad/...) and every ``extra_special_tokens`` /
          ``additional_special_tokens`` entry is registered as a special added token;
        * whether ``encode`` adds BOS/EOS is decided by tokenizer.json's post-processor alone (Llama
          2/3 and Mistral add BOS there, Qwen2 adds none): transformers 5 drops the config's
          ``add_bos_token``/``add_eos_token`` whenever tokenizer.json exists (transformers 4 honoured
          them only in model-specific classes such as LlamaTokenizerFast);
        * ``clean_up_tokenization_spaces`` is not applied: transformers 5 ignores it for BPE.

        Raises:
            ValueError: the directory or its tokenizer.json is missing or unreadable.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ValueError(f"model directory {str(model_dir)!r} does not exist")
        tokenizer_file = model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ValueError(f"no tokenizer.json in {str(model_dir)!r}: hearth needs the fast-tokenizer file")
        try:
            backend = BackendTokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises a bare Exception on malformed JSON
            raise ValueError(f"cannot read {tokenizer_file}: {exc}") from exc
        config = _read_json(model_dir / "special_tokens_map.json")
        config.update(_read_json(model_dir / "tokenizer_config.json"))  # the config wins, as in transformers

        special_tokens = {}
        to_register = []
        for name in _NAMED_SPECIAL_TOKENS:
            token = _as_added_token(config.get(name))
            if token is not None:
                special_tokens[name] = token.content
                to_register.append(token)
        for key in ("extra_special_tokens", "additional_special_tokens"):
            extra = config.get(key) or []
            to_register += [t for t in map(_as_added_token, extra if isinstance(extra, list) else []) if t]
        if to_register:
            backend.add_special_tokens(to_register)
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))

        max_length = config.get("model_max_length")
        return cls(
            backend,
            special_tokens=special_tokens,
            chat_templates=_load_chat_templates(model_dir, config),
            model_max_length=int(max_length) if isinstance(max_length, (int, float)) else None,
        )

    # ---- ids <-> text -------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` applies the post-processor (BOS/EOS)."""
        if not isinstance(text, str):
            raise ValueError(f"text to encode must be a str, got {type(text).__name__}")
        if len(text) > _GIL_FREE_CHARS:
            # the batch call releases the GIL while it works: a long prompt being tokenized on a
            # server's worker thread then does not stall the event loop or the engine thread
            return self._backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; undecodable bytes become U+FFFD, unknown ids are dropped."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | None | list[str | None]:
        """The vocabulary string(s) of ``ids`` (None for an id outside the vocabulary)."""
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        return [self._backend.id_to_token(int(i)) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        """The id of vocabulary string ``token``, or None."""
        return self._backend.token_to_id(token)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (``len(AutoTokenizer)``)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> BackendTokenizer:
        """The underlying `tokenizers.Tokenizer` (read it; mutating it desynchronises this wrapper)."""
        return self._backend

    # ---- special tokens -----------------------------------------------------------------------

    @property
    def bos_token(self) -> str | None:
        """The BOS string from tokenizer_config.json (None when the model has none)."""
        return self._special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        """The EOS string from tokenizer_config.json (None when the model has none)."""
        return self._special_tokens.get("eos_token")

    @property
    def bos_token_id(self) -> int | None:
        """Id of `bos_token`, or None."""
        return self._named_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        """Id of `eos_token`, or None (generation_config.json may list more stop ids)."""
        return self._named_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        """Id of the pad token, or None."""
        return self._named_id("pad_token")

    @property
    def all_special_ids(self) -> list[int]:
        """Sorted ids that ``decode(..., skip_special_tokens=True)`` drops.

        That is every added token flagged special, which includes the named ones; it can be wider
        than transformers' list (e.g. Llama 3's reserved tokens), on purpose: it is what decoding skips.
        """
        return sorted(self._special_ids)

    @property
    def byte_fallback_ids(self) -> frozenset[int]:
        """Ids of ``<0xXX>`` pieces that the decoder turns into raw bytes (empty without ByteFallback)."""
        return self._byte_fallback_ids

    def _named_id(self, name: str) -> int | None:
        token = self._special_tokens.get(name)
        return None if token is None else self._backend.token_to_id(token)

    # ---- chat ---------------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        """The default chat template source, or None."""
        return self._chat_templates.get("default")

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        *,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str | list[int]:
        """Render ``messages`` with the model's chat template, as transformers does.

        The template sees ``messages``, ``tools``, ``documents``, ``add_generation_prompt``, the named
        special tokens (``bos_token``, ``eos_token``, ...) and ``kwargs`` (which override them).
        ``chat_template`` may name one of the model's templates or be a template source.
        With ``tokenize=True`` the text is encoded without adding special tokens (the template
        writes them itself). Message keys whose value is None are dropped first, like transformers.

        Raises:
            ValueError: no chat template, malformed messages, or the template itself failed
                (including ``raise_exception`` calls).
        """
        source = self._select_template(chat_template, tools)
        conversation = validate_messages(messages)
        if tools is not None and not all(isinstance(t, Mapping) for t in tools):
            raise ValueError("tools must be a list of JSON-schema dicts")
        variables = {**self._special_tokens, **kwargs}
        try:
            text = compile_template(source).render(
                messages=plain(conversation),
                tools=plain(tools),
                documents=plain(documents),
                add_generation_prompt=add_generation_prompt,
                **plain(variables),
            )
        except jinja2.TemplateError as exc:
            raise ValueError(f"chat template failed: {exc}") from exc
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def _select_template(self, chat_template: str | None, tools: list | None) -> str:
        if chat_template is not None:
            return self._chat_templates.get(chat_template, chat_template)
        if tools is not None and "tool_use" in self._chat_templates:
            return self._chat_templates["tool_use"]
        if "default" in self._chat_templates:
            return self._chat_templates["default"]
        if self._chat_templates:
            names = sorted(self._chat_templates)
            raise ValueError(f"the model has chat templates {names} but none named 'default'")
        raise ValueError(
            "the tokenizer has no chat template (no 'chat_template' in tokenizer_config.json and no "
            "chat_template.jinja); pass plain prompts instead of chat messages"
        )


# ---- loading helpers ----------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _as_added_token(value: Any) -> AddedToken | None:
    """A config entry (plain string or serialized AddedToken dict) as a special AddedToken."""
    if isinstance(value, str):
        return AddedToken(value, special=True, normalized=False)
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        options = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in value}
        options.setdefault("normalized", False)
        return AddedToken(value["content"], special=True, **options)
    return None


def _load_chat_templates(model_dir: Path, config: dict) -> dict[str, str]:
    """Templates by name: config ``chat_template`` (str or [{name, template}]), then files, which win."""
    templates: dict[str, str] = {}
    raw = config.get("chat_template")
    if isinstance(raw, str):
        templates["default"] = raw
    elif isinstance(raw, list):
        templates.update({t["name"]: t["template"] for t in raw if isinstance(t, Mapping) and "name" in t})
    extra_dir = model_dir / "additional_chat_templates"  # transformers 5 layout for named templates
    if extra_dir.is_dir():
        templates.update({p.stem: p.read_text(encoding="utf-8") for p in sorted(extra_dir.glob("*.jinja"))})
    default_file = model_dir / "chat_template.jinja"
    if default_file.is_file():
        templates["default"] = default_file.read_text(encoding="utf-8")
    return templates


def _find_byte_fallback_ids(backend: BackendTokenizer) -> frozenset[int]:
    # Only a ByteFallback decoder turns <0xXX> pieces into bytes; elsewhere they are plain text.
    decoder = backend.decoder
    if decoder is None or b'"ByteFallback"' not in decoder.__getstate__():
        return frozenset()
    pieces = (f"<0x{b:02X}>" for b in range(256))
    pieces_lower = (f"<0x{b:02x}>" for b in range(256))
    ids = (backend.token_to_id(p) for p in (*pieces, *pieces_lower))
    return frozenset(i for i in ids if i is not None)

