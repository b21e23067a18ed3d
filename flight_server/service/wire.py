"""Flight protocol messages written and read by hand, without protobuf or pyarrow.flight
objects on the way: what every call sends is built from bytes made once where it can be.

- ``encode_message``: one ``FlightData`` from an encapsulated IPC message (flatbuffer
  header in field 2, body in field 1000), so a batch's rows are copied once on the way out;
- ``decode_flight_data`` / ``ipc_message``: a DoPut ``FlightData`` back into an IPC message;
- ``Info`` / ``encode_info``: a ``FlightInfo`` from its parts, the schema's IPC bytes taken
  from ``SchemaForms`` and the descriptor echoed as the client sent it;
- ``SchemaForms``: the wire forms of the schemas answered lately (the IPC schema, its
  ``FlightData``, the schema its batches are sent as), so a statement run again does not
  serialize its schema again;
- ``encode_put_result``: a ``PutResult`` carrying app_metadata.

Field numbers are those of ``Flight.proto`` (``quiver.proto.flight_pb2`` holds the same
messages for readers that want objects).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from quiver.flight_server.service.errors import InvalidArgument

_CONTINUATION = b"\xff\xff\xff\xff"
# An encapsulated IPC message opens with the continuation marker and the metadata size.
_PREFIX = struct.Struct("<Ii")
_UINT64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """``value`` (non-negative) as a protobuf varint."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((v,)) for v in range(0x80)]


def _tag(number: int, wire_type: int = 2) -> bytes:
    return varint(number << 3 | wire_type)


def _field(tag: bytes, data: bytes) -> bytes:
    return b"".join((tag, varint(len(data)), data))


def _int64(value: int) -> bytes:
    """A signed int64 as protobuf writes it (negatives take ten bytes)."""
    return varint(value & _UINT64)


# FlightData
_HEADER_TAG = _tag(2)
_BODY_TAG = _tag(1000)
# FlightInfo: schema, flight_descriptor, endpoint, total_records, total_bytes
_INFO_SCHEMA = _tag(1)
_INFO_DESCRIPTOR = _tag(2)
_INFO_ENDPOINT = _tag(3)
_INFO_RECORDS = _tag(4, 0)
_INFO_BYTES = _tag(5, 0)
# FlightEndpoint: ticket, location; Ticket: ticket; Location: uri
_ENDPOINT_TICKET = _tag(1)
_ENDPOINT_LOCATION = _tag(2)
_TICKET = _tag(1)
_LOCATION_URI = _tag(1)
# PutResult: app_metadata
_PUT_METADATA = _tag(1)


def encode_message(buf: pa.Buffer) -> bytes:
    """The FlightData bytes of one encapsulated IPC message (``schema.serialize()`` or
    ``batch.serialize()``): its flatbuffer metadata as data_header, the rest as data_body."""
    marker, size = _PREFIX.unpack_from(buf)
    start = 8
    if marker != 0xFFFFFFFF:  # the pre-1.0 form without the continuation marker
        size, start = marker, 4
    view = memoryview(buf)
    end = start + size
    body = len(view) - end
    if not body:
        return b"".join((_HEADER_TAG, varint(size), view[start:end]))
    return b"".join((_HEADER_TAG, varint(size), view[start:end], _BODY_TAG, varint(body),
                     view[end:]))


def encode_put_result(metadata: bytes) -> bytes:
    """A PutResult carrying ``metadata`` as its app_metadata."""
    return _field(_PUT_METADATA, metadata) if metadata else b""


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise InvalidArgument("truncated FlightData message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise InvalidArgument("malformed varint in a FlightData message")


def decode_flight_data(data: bytes) -> dict[int, memoryview]:
    """The length-delimited fields of one FlightData message by field number."""
    view = memoryview(data)
    fields: dict[int, memoryview] = {}
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = _read_varint(view, pos)
            if pos + size > len(view):
                raise InvalidArgument("truncated FlightData message")
            fields[number] = view[pos:pos + size]
            pos += size
        elif wire == 0:
            _, pos = _read_varint(view, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise InvalidArgument(f"unexpected wire type {wire} in a FlightData message")
    return fields


def ipc_message(header: memoryview, body: memoryview | None) -> pa.ipc.Message:
    """The IPC message a DoPut FlightData carries; INVALID_ARGUMENT when it is malformed."""
    pad = -len(header) % 8
    parts: list[bytes | memoryview] = [
        _CONTINUATION, struct.pack("<i", len(header) + pad), header, b"\x00" * pad,
    ]
    if body is not None:
        parts.append(body)
    try:
        return pa.ipc.read_message(pa.py_buffer(b"".join(parts)))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidArgument(f"DoPut sent a malformed IPC message: {exc}") from None


@dataclass(slots=True)
class SchemaForm:
    """One schema as it goes out: ``ipc`` (the encapsulated IPC schema a FlightInfo and a
    SchemaResult carry), ``message`` (the FlightData that opens a DoGet stream) and
    ``plain`` (the schema batches are cast to before sending: dictionary columns as their
    value type, since no dictionary messages are sent; None when nothing changes)."""

    schema: pa.Schema
    ipc: bytes
    message: bytes
    plain: pa.Schema | None


def _plain_schema(schema: pa.Schema) -> pa.Schema | None:
    if not any(pa.types.is_dictionary(f.type) for f in schema):
        return None
    return pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type)
                      else f for f in schema], metadata=schema.metadata)


class SchemaForms:
    """The ``SchemaForm`` of the last ``size`` distinct schemas answered. Schemas are
    compared, metadata included, not hashed: hashing a schema costs more than comparing a
    few."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        # Replaced whole, never changed in place, so readers need no lock.
        self._recent: tuple[SchemaForm, ...] = ()
        self._lock = threading.Lock()

    def of(self, schema: pa.Schema) -> SchemaForm:
        for form in self._recent:
            if form.schema is schema or form.schema.equals(schema, check_metadata=True):
                return form
        plain = _plain_schema(schema)
        sent = (plain or schema).serialize()
        form = SchemaForm(schema, schema.serialize().to_pybytes() if plain is not None
                          else sent.to_pybytes(), encode_message(sent), plain)
        with self._lock:
            self._recent = (form, *self._recent[:self.size - 1])
        return form


@dataclass(slots=True)
class Endpoint:
    """Where one part of a result is read: its ticket, and the locations that serve it
    (none: the client reads over the connection it has)."""

    ticket: bytes
    locations: Sequence[str] = ()


@dataclass(slots=True)
class Info:
    """What GetFlightInfo (and each ListFlights entry) answers. ``descriptor`` is the
    serialized FlightDescriptor to echo; None echoes the one the client sent."""

    schema: pa.Schema
    endpoints: Sequence[Endpoint]
    total_records: int = -1
    total_bytes: int = -1
    descriptor: bytes | None = None


def encode_info(info: Info, schema_ipc: bytes, descriptor: bytes) -> bytes:
    """The FlightInfo message of ``info``, its schema given as IPC bytes."""
    parts = [_field(_INFO_SCHEMA, schema_ipc), _field(_INFO_DESCRIPTOR, descriptor)]
    for endpoint in info.endpoints:
        inner = [_field(_ENDPOINT_TICKET, _field(_TICKET, endpoint.ticket))]
        for uri in endpoint.locations:
            inner.append(_field(_ENDPOINT_LOCATION, _field(_LOCATION_URI, uri.encode())))
        parts.append(_field(_INFO_ENDPOINT, b"".join(inner)))
    parts += (_INFO_RECORDS, _int64(info.total_records), _INFO_BYTES, _int64(info.total_bytes))
    return b"".join(parts)


def path_descriptor(*path: str) -> bytes:
    """The serialized FlightDescriptor of type PATH naming ``path``."""
    return b"".join((b"\x08\x01", *(_field(_tag(3), p.encode()) for p in path)))
