"""What an Arrow IPC record batch message will take once decoded, read from its metadata
before anything is decoded.

A client's message is small on the wire but may decode to far more: a compressed buffer
carries the length it expands to (a few kilobytes of zstd become gigabytes of zeros), and
uncompressed buffers may all point at the same bytes of the body (ten thousand columns
over one column's data). ``decoded_bytes`` adds up what every buffer of the batch
declares — the length each compressed buffer names, the length of each plain one — so a
server can refuse a batch before a byte of it is decompressed or scanned.

The metadata is the ``Message`` flatbuffer of the Arrow columnar format
(``Schema.fbs`` / ``Message.fbs``): ``Message.header`` is a ``RecordBatch`` whose
``buffers`` are ``(offset, length)`` pairs into the body and whose ``compression`` is set
when each buffer starts with its 64-bit uncompressed length (-1: stored as is).
"""

from __future__ import annotations

import struct

from quiver.flight_server.service.errors import InvalidArgument

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_I64 = struct.Struct("<q")
_BUFFER = struct.Struct("<qq")

# Message fields, and the union tag of a record batch header.
_MESSAGE_HEADER_TYPE, _MESSAGE_HEADER = 1, 2
_RECORD_BATCH = 3
# RecordBatch fields.
_BATCH_BUFFERS, _BATCH_COMPRESSION = 2, 3
_NOT_COMPRESSED = -1


class MalformedBatch(InvalidArgument):
    """The metadata or the body's buffer prefixes do not describe a record batch."""


def decoded_bytes(metadata: bytes | memoryview, body: bytes | memoryview) -> int:
    """The bytes the record batch message (its ``Message`` flatbuffer and body) declares
    its buffers decode to; ``MalformedBatch`` when they cannot be read."""
    meta = memoryview(metadata)
    data = memoryview(body)
    try:
        message = _U32.unpack_from(meta, 0)[0]
        kind = _scalar(meta, message, _MESSAGE_HEADER_TYPE, "<B")
        if kind != _RECORD_BATCH:
            raise MalformedBatch("the message is not a record batch")
        batch = _child(meta, message, _MESSAGE_HEADER)
        if batch is None:
            raise MalformedBatch("the record batch message has no header")
        compressed = _field(meta, batch, _BATCH_COMPRESSION) != 0
        total = 0
        for offset, length in _buffers(meta, batch):
            if offset < 0 or length < 0 or offset + length > len(data):
                raise MalformedBatch("a buffer lies outside the message body")
            if not compressed or length == 0:
                total += length
                continue
            if length < _I64.size:
                raise MalformedBatch("a compressed buffer is shorter than its length prefix")
            declared = _I64.unpack_from(data, offset)[0]
            if declared == _NOT_COMPRESSED:
                total += length - _I64.size
            elif declared < 0:
                raise MalformedBatch("a compressed buffer declares a negative length")
            else:
                total += declared
        return total
    except struct.error:
        raise MalformedBatch("the record batch metadata is truncated") from None


def _vtable(meta: memoryview, table: int) -> tuple[int, int]:
    vtable = table - _I32.unpack_from(meta, table)[0]
    if vtable < 0:
        raise struct.error("vtable outside the metadata")
    return vtable, _U16.unpack_from(meta, vtable)[0]


def _field(meta: memoryview, table: int, index: int) -> int:
    """Where field ``index`` of the table at ``table`` starts, 0 when it is absent."""
    vtable, size = _vtable(meta, table)
    slot = 4 + 2 * index
    if slot + 2 > size:
        return 0
    offset = _U16.unpack_from(meta, vtable + slot)[0]
    return table + offset if offset else 0


def _scalar(meta: memoryview, table: int, index: int, fmt: str) -> int:
    at = _field(meta, table, index)
    return struct.unpack_from(fmt, meta, at)[0] if at else 0


def _child(meta: memoryview, table: int, index: int) -> int | None:
    at = _field(meta, table, index)
    return at + _U32.unpack_from(meta, at)[0] if at else None


def _buffers(meta: memoryview, batch: int) -> list[tuple[int, int]]:
    vector = _child(meta, batch, _BATCH_BUFFERS)
    if vector is None:
        return []
    count = _U32.unpack_from(meta, vector)[0]
    start = vector + 4
    if start + count * _BUFFER.size > len(meta):
        raise struct.error("buffer list outside the metadata")
    return [_BUFFER.unpack_from(meta, start + i * _BUFFER.size) for i in range(count)]
