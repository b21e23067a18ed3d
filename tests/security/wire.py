"""Protobuf wire pieces for tests that write Flight messages by hand (malformed or
hostile ones a client library would not send)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """``n`` as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field ``number`` holding ``payload``."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
