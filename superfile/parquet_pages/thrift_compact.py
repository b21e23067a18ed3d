"""Schema-less Thrift compact protocol: decode any struct into plain values and encode it back.

Parquet stores its footer, page headers and page index as Thrift compact structs.
pyarrow neither exposes the page index nor accepts hand-made metadata, so this
module reads and writes those structs without a generated schema: a struct is an
ordered ``dict`` of field id -> ``(TType, value)``; unknown fields survive a
decode/encode round trip untouched.

Value representation per type: ``BOOL`` -> ``bool``; ``I8``/``I16``/``I32``/``I64``
-> ``int``; ``DOUBLE`` -> ``float``; ``BINARY`` -> ``bytes``; ``UUID`` -> 16
``bytes``; ``LIST``/``SET`` -> :class:`TList`; ``MAP`` -> :class:`TMap`;
``STRUCT`` -> ``dict``.

Decoding is defensive because the bytes come from storage: every length is checked
against the bytes left, nesting depth is bounded, and any malformation raises
``CorruptFileError``.
"""

from __future__ import annotations

import struct as _struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from quiver.superfile.errors import CorruptFileError

MAX_DEPTH = 64


class TType(IntEnum):
    """Compact-protocol type codes (``BOOL`` stands for both boolean codes)."""

    STOP = 0
    BOOL = 1
    I8 = 3
    I16 = 4
    I32 = 5
    I64 = 6
    DOUBLE = 7
    BINARY = 8
    LIST = 9
    SET = 10
    MAP = 11
    STRUCT = 12
    UUID = 13


_FALSE_CODE = 2
_VALID_ELEMENT_CODES = frozenset(range(1, 14)) - {2}
_INT_BOUNDS = {
    TType.I8: (-(1 << 7), (1 << 7) - 1),
    TType.I16: (-(1 << 15), (1 << 15) - 1),
    TType.I32: (-(1 << 31), (1 << 31) - 1),
    TType.I64: (-(1 << 63), (1 << 63) - 1),
}
_DOUBLE = _struct.Struct("<d")

Struct = dict[int, tuple[TType, Any]]


@dataclass
class TList:
    """A Thrift list (or set, when ``is_set``) of one element type."""

    elem_type: TType
    items: list[Any] = field(default_factory=list)
    is_set: bool = False


@dataclass
class TMap:
    """A Thrift map; an empty map carries no element types on the wire (``STOP``)."""

    key_type: TType
    value_type: TType
    items: list[tuple[Any, Any]] = field(default_factory=list)


def _element_type(code: int) -> TType:
    # Collections write booleans with code 1; code 2 is tolerated for old writers.
    if code == _FALSE_CODE:
        return TType.BOOL
    if code not in _VALID_ELEMENT_CODES:
        raise CorruptFileError(f"invalid thrift element type {code}")
    return TType(code)


class _Decoder:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def _byte(self) -> int:
        if self.pos >= self.end:
            raise CorruptFileError("thrift data truncated")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        result = 0
        shift = 0
        while True:
            b = self._byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise CorruptFileError("thrift varint longer than 10 bytes")

    def zigzag(self, ttype: TType) -> int:
        n = self.varint()
        value = (n >> 1) ^ -(n & 1)
        lo, hi = _INT_BOUNDS[ttype]
        if not lo <= value <= hi:
            raise CorruptFileError(f"thrift {ttype.name} value {value} out of range")
        return value

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            left = self.end - self.pos
            raise CorruptFileError(f"thrift length {n} exceeds the {left} bytes left")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def value(self, ttype: TType, depth: int) -> Any:
        if ttype == TType.BOOL:
            b = self._byte()
            if b not in (0, 1, 2):
                raise CorruptFileError(f"invalid thrift bool byte {b}")
            return b == 1
        if ttype == TType.I8:
            b = self._byte()
            return b - 256 if b > 127 else b
        if ttype in (TType.I16, TType.I32, TType.I64):
            return self.zigzag(ttype)
        if ttype == TType.DOUBLE:
            return _DOUBLE.unpack(self.take(8))[0]
        if ttype == TType.BINARY:
            return self.take(self.varint())
        if ttype == TType.UUID:
            return self.take(16)
        if depth >= MAX_DEPTH:
            raise CorruptFileError(f"thrift nesting deeper than {MAX_DEPTH}")
        if ttype == TType.STRUCT:
            return self.struct(depth + 1)
        if ttype in (TType.LIST, TType.SET):
            return self.list(ttype == TType.SET, depth + 1)
        if ttype == TType.MAP:
            return self.map(depth + 1)
        raise CorruptFileError(f"invalid thrift type {ttype}")

    def list(self, is_set: bool, depth: int) -> TList:
        head = self._byte()
        size = head >> 4
        if size == 15:
            size = self.varint()
        elem = _element_type(head & 0x0F)
        # Every element takes at least one byte, so a count beyond the bytes left is corrupt
        # (this is what keeps random input from allocating or looping without bound).
        if size > self.end - self.pos:
            raise CorruptFileError(f"thrift list of {size} elements exceeds the bytes left")
        return TList(elem, [self.value(elem, depth) for _ in range(size)], is_set)

    def map(self, depth: int) -> TMap:
        size = self.varint()
        if size == 0:
            return TMap(TType.STOP, TType.STOP, [])
        kinds = self._byte()
        ktype = _element_type(kinds >> 4)
        vtype = _element_type(kinds & 0x0F)
        if 2 * size > self.end - self.pos:
            raise CorruptFileError(f"thrift map of {size} entries exceeds the bytes left")
        items = []
        for _ in range(size):
            k = self.value(ktype, depth)
            items.append((k, self.value(vtype, depth)))
        return TMap(ktype, vtype, items)

    def struct(self, depth: int) -> Struct:
        out: Struct = {}
        last = 0
        while True:
            head = self._byte()
            code = head & 0x0F
            if code == TType.STOP:
                if head != 0:
                    raise CorruptFileError(f"invalid thrift field header {head:#x}")
                return out
            delta = head >> 4
            fid = last + delta if delta else self.zigzag(TType.I16)
            if fid > _INT_BOUNDS[TType.I16][1]:
                raise CorruptFileError(f"thrift field id {fid} out of range")
            last = fid
            if code in (1, _FALSE_CODE):
                out[fid] = (TType.BOOL, code == 1)
                continue
            if code not in _VALID_ELEMENT_CODES:
                raise CorruptFileError(f"invalid thrift field type {code}")
            ttype = TType(code)
            out[fid] = (ttype, self.value(ttype, depth))


def decode_struct(buf: bytes | memoryview, pos: int = 0) -> tuple[Struct, int]:
    """Decodes one struct starting at ``pos``; returns it and the position just after it."""
    dec = _Decoder(buf, pos)
    try:
        return dec.struct(0), dec.pos
    except RecursionError as exc:  # pragma: no cover - MAX_DEPTH keeps well below the limit
        raise CorruptFileError("thrift nesting too deep") from exc


class _Encoder:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        out = self.out
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)

    def zigzag(self, value: int, ttype: TType) -> None:
        lo, hi = _INT_BOUNDS[ttype]
        if not isinstance(value, int) or not lo <= value <= hi:
            raise CorruptFileError(f"cannot encode {value!r} as thrift {ttype.name}")
        self.varint((value << 1) ^ (value >> 63))

    def binary(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CorruptFileError(f"cannot encode {type(value).__name__} as thrift binary")
        self.varint(len(value))
        self.out += value

    def value(self, ttype: TType, value: Any) -> None:
        if ttype == TType.BOOL:
            self.out.append(1 if value else _FALSE_CODE)
        elif ttype == TType.I8:
            lo, hi = _INT_BOUNDS[TType.I8]
            if not isinstance(value, int) or not lo <= value <= hi:
                raise CorruptFileError(f"cannot encode {value!r} as thrift I8")
            self.out.append(value & 0xFF)
        elif ttype in (TType.I16, TType.I32, TType.I64):
            self.zigzag(value, ttype)
        elif ttype == TType.DOUBLE:
            self.out += _DOUBLE.pack(value)
        elif ttype == TType.BINARY:
            self.binary(value)
        elif ttype == TType.UUID:
            if not isinstance(value, bytes) or len(value) != 16:
                raise CorruptFileError("a thrift uuid is exactly 16 bytes")
            self.out += value
        elif ttype == TType.STRUCT:
            self.struct(value)
        elif ttype in (TType.LIST, TType.SET):
            self.list(value)
        elif ttype == TType.MAP:
            self.map(value)
        else:
            raise CorruptFileError(f"cannot encode thrift type {ttype!r}")

    def list(self, value: TList) -> None:
        if not isinstance(value, TList) or value.elem_type in (TType.STOP,):
            raise CorruptFileError("a thrift list needs a TList with an element type")
        n = len(value.items)
        code = int(value.elem_type)
        if n < 15:
            self.out.append((n << 4) | code)
        else:
            self.out.append(0xF0 | code)
            self.varint(n)
        for item in value.items:
            self.value(value.elem_type, item)

    def map(self, value: TMap) -> None:
        if not isinstance(value, TMap):
            raise CorruptFileError("a thrift map needs a TMap")
        self.varint(len(value.items))
        if not value.items:
            return
        self.out.append((int(value.key_type) << 4) | int(value.value_type))
        for k, v in value.items:
            self.value(value.key_type, k)
            self.value(value.value_type, v)

    def struct(self, value: Struct) -> None:
        if not isinstance(value, dict):
            raise CorruptFileError("a thrift struct needs a dict of field id -> (type, value)")
        last = 0
        for fid, (ttype, item) in value.items():
            lo, hi = _INT_BOUNDS[TType.I16]
            if not lo <= fid <= hi:
                raise CorruptFileError(f"thrift field id {fid} out of range")
            code = (1 if item else _FALSE_CODE) if ttype == TType.BOOL else int(ttype)
            if ttype == TType.STOP:
                raise CorruptFileError("a thrift field cannot have type STOP")
            delta = fid - last
            if 0 < delta <= 15:
                self.out.append((delta << 4) | code)
            else:
                self.out.append(code)
                self.zigzag(fid, TType.I16)
            last = fid
            if ttype != TType.BOOL:
                self.value(ttype, item)
        self.out.append(0)


def encode_struct(value: Struct) -> bytes:
    """Encodes a struct (as produced by :func:`decode_struct`) to compact-protocol bytes."""
    enc = _Encoder()
    enc.struct(value)
    return bytes(enc.out)
