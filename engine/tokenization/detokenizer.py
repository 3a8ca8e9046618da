"""Streaming detokenization: turn generated ids into text deltas, one token at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# Prompt tokens kept as decoding context when prompt ids are given (vLLM uses the same 5): enough
# for the decoder to see the word boundary before the first generated token.
_NUM_CONTEXT_TOKENS = 5
_REPLACEMENT_CHAR = "\ufffd"


class TokenDecoder(Protocol):
    """What the detokenizer needs of a tokenizer (`hearth.engine.tokenization.tokenizer.Tokenizer`
    has it); a protocol, so that this module depends on no tokenizer implementation."""

    @property
    def all_special_ids(self) -> Sequence[int]: ...

    @property
    def byte_fallback_ids(self) -> frozenset[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Turns a stream of generated token ids into text deltas that never split a character.

    Invariant (without ``prompt_ids``): after `flush`, the concatenation of every delta returned by
    `add` and `flush` equals ``tokenizer.decode(generated_ids, skip_special_tokens)``, and after every
    step `text` is a prefix of that final string. So for sentencepiece (Metaspace) tokenizers the
    first token's leading space is dropped, exactly like ``decode(output_ids)``.

    With ``prompt_ids`` the last few prompt tokens serve as decoding context, so the first generated
    token keeps its leading space (vLLM's streaming behaviour); the text then equals
    ``decode(context + generated)`` with the ``decode(context)`` prefix removed.

    How: decode only a window ``ids[prefix_offset:]`` and diff it against the already-emitted
    window ``ids[prefix_offset:read_offset]`` (the prefix/read-offset technique), so each step costs
    O(window), not O(sequence). Text is held back while it may still change:
      * the window's text ends in U+FFFD: a byte-level multi-byte character is still incomplete;
      * the last decoded token is a ``<0xXX>`` byte piece: a ByteFallback decoder decodes a whole
        run of byte pieces at once (an invalid run turns into one U+FFFD per byte), so nothing in an
        open run is final until a non-byte token closes it.
    `flush` releases what is held (an incomplete tail then shows as U+FFFD, as ``decode`` shows it).
    """

    def __init__(
        self,
        tokenizer: TokenDecoder,
        prompt_ids: Sequence[int] | None = None,
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # Skipped special tokens never reach the decoder, so they neither open nor close a byte run.
        self._skipped_ids = frozenset(tokenizer.all_special_ids) if skip_special_tokens else frozenset()
        self._byte_ids = tokenizer.byte_fallback_ids
        context = [int(i) for i in prompt_ids[-_NUM_CONTEXT_TOKENS:]] if prompt_ids else []
        self._ids: list[int] = context
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._prefix_text = self._decode(0, len(context))
        self._in_byte_run = False
        self._parts: list[str] = []
        self._text: str | None = ""

    @property
    def text(self) -> str:
        """All text emitted so far (the concatenation of the deltas)."""
        if self._text is None:
            self._text = "".join(self._parts)
        return self._text

    def add(self, token_id: int) -> str:
        """Append one generated token; return the newly finalized text (often "")."""
        token_id = int(token_id)
        self._ids.append(token_id)
        if token_id not in self._skipped_ids:
            self._in_byte_run = token_id in self._byte_ids
        if self._in_byte_run:
            return ""
        return self._advance(final=False)

    def flush(self) -> str:
        """Release held-back text at the end of generation (a dangling incomplete character).

        Call it once after the last `add`; the deltas then add up to ``decode(generated_ids)``.
        """
        self._in_byte_run = False
        return self._advance(final=True)

    def _decode(self, start: int, stop: int) -> str:
        return self._tokenizer.decode(self._ids[start:stop], skip_special_tokens=self._skip_special_tokens)

    def _advance(self, final: bool) -> str:
        new_text = self._decode(self._prefix_offset, len(self._ids))
        if not final and new_text.endswith(_REPLACEMENT_CHAR):
            return ""  # maybe half a character; the next token may complete it
        if not new_text.startswith(self._prefix_text):
            # The window's start decoded differently once more tokens followed it (not the case for
            # the byte-level, ByteFallback or Metaspace decoders): diff against everything instead.
            self._prefix_offset = 0
            self._prefix_text = self._decode(0, self._read_offset)
            new_text = self._decode(0, len(self._ids))
        delta = new_text[len(self._prefix_text) :]
        if not delta:
            # Keep the offsets: a window whose prefix decodes to nothing would let a Strip/Metaspace
            # decoder drop the leading space of the next token, which decode(all) keeps.
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        self._prefix_text = self._decode(self._prefix_offset, self._read_offset)
        self._parts.append(delta)
        self._text = None
        return delta
