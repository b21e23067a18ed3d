"""The Flight SQL protocol messages, their compiled modules, and Any packing.

``FlightSql.proto`` and ``Flight.proto`` are compiled by ``make proto`` into
``quiver.proto.flight_sql_pb2`` and ``quiver.proto.flight_pb2`` (generated code, committed).
Flight SQL carries every command, ticket and action body as a ``google.protobuf.Any``; ``pack`` and
``unpack`` are the only two ways the server turns those bytes into messages and back.

The Flight SQL messages live in a descriptor pool of their own, not the process-wide
default one, so that another library's copy of the same definitions can be imported next
to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from quiver.proto import flight_sql_pb2
from quiver.root_error import Kind, QuiverError

__all__ = [
    "MESSAGES",
    "PACKAGE",
    "TYPE_URL_PREFIX",
    "ProtocolMessageError",
    "flight_sql_pb2",
    "pack",
    "type_url",
    "unpack",
]

PACKAGE = "arrow.flight.protocol.sql"
TYPE_URL_PREFIX = "type.googleapis.com/"

MESSAGES: Mapping[str, type[Message]] = MappingProxyType(
    {
        f"{PACKAGE}.{name}": getattr(flight_sql_pb2, name)
        for name in flight_sql_pb2.DESCRIPTOR.message_types_by_name
    }
)
"""Every top-level Flight SQL message class, by its full protobuf name."""


class ProtocolMessageError(ValueError, QuiverError):
    """Bytes that are not a packed Flight SQL message this server knows."""

    kind = Kind.INVALID_INPUT


def type_url(message: Message | type[Message]) -> str:
    """The Any type URL of a Flight SQL message or message class."""
    return TYPE_URL_PREFIX + message.DESCRIPTOR.full_name


def pack(message: Message) -> bytes:
    """Serialize a Flight SQL message wrapped in a ``google.protobuf.Any``."""
    full_name = message.DESCRIPTOR.full_name
    if MESSAGES.get(full_name) is not type(message):
        raise TypeError(f"not a Flight SQL message: {full_name}")
    return any_pb2.Any(
        type_url=TYPE_URL_PREFIX + full_name, value=message.SerializeToString()
    ).SerializeToString()


def unpack(data: bytes) -> Message:
    """The Flight SQL message packed in ``data`` (an ``Any``), as its concrete class.

    Raises ProtocolMessageError when the bytes are not an ``Any``, name a type outside
    Flight SQL, or carry a body that does not parse as that type.
    """
    envelope = any_pb2.Any()
    try:
        envelope.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise ProtocolMessageError(
            f"expected a Flight SQL command packed in google.protobuf.Any; "
            f"{len(data)} bytes do not parse as one ({exc})"
        ) from None
    # The Any rules make everything up to the last '/' a resolver hint; only the
    # name after it identifies the type.
    full_name = envelope.type_url.rpartition("/")[2]
    cls = MESSAGES.get(full_name)
    if cls is None:
        shown = envelope.type_url[:200] or "<empty>"
        raise ProtocolMessageError(
            f"unknown Flight SQL message type {shown!r}: expected "
            f"{TYPE_URL_PREFIX}{PACKAGE}.<Command...|Action...|Ticket...>"
        )
    message = cls()
    try:
        message.ParseFromString(envelope.value)
    except DecodeError as exc:
        raise ProtocolMessageError(
            f"the body of {full_name} does not parse ({exc})"
        ) from None
    return message
