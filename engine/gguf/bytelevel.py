"""GPT-2's byte <-> character table, which byte-level BPE vocabularies (and their GGUF token
lists) are spelled in: every byte gets a printable character, bytes that are printable already
keep their own."""

from __future__ import annotations

import functools


@functools.cache
def byte_to_char() -> dict[int, str]:
    """byte value -> the character that spells it in a byte-level vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:  # control characters, space, etc. move to 256 + n
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.cache
def alphabet() -> frozenset[str]:
    """The 256 characters of the byte-level spelling."""
    return frozenset(byte_to_char().values())


def spell(text: str) -> str:
    """`text`'s UTF-8 bytes in the byte-level spelling ("é" -> "Ã©", " a" -> "Ġa")."""
    table = byte_to_char()
    return "".join(table[b] for b in text.encode("utf-8"))
