"""A Flight client for Quiver servers, shared by the Spark connector and the command line.

``ConnectionOptions`` says how to reach and authenticate to a server (picklable, so
Spark tasks carry it); ``ingest`` sends a stream of batches with one Flight SQL bulk
ingest, optionally under a ``quiver.batch_id`` key so that sending it again adds no
row twice; ``table_schema`` asks for a table's schema. Every server refusal becomes
a ``QuiverClientError`` naming the server, the call and the server's own message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.flight as flight

from quiver.proto import flight_sql_pb2, pack
from quiver.root_error import QuiverError

BATCH_ID_OPTION = "quiver.batch_id"

_Ingest = flight_sql_pb2.CommandStatementIngest
_Options = _Ingest.TableDefinitionOptions


class QuiverClientError(QuiverError):
    """An option is wrong or the Quiver server refused a call (its message kept)."""


@dataclass(frozen=True)
class ConnectionOptions:
    """How to reach and authenticate to a server; picklable, so tasks carry it."""

    uri: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    tls_root_certs: bytes | None = None
    tls_override_hostname: str | None = None
    tls_skip_verify: bool = False

    @classmethod
    def from_options(cls, options: Any) -> ConnectionOptions:
        uri = option(options, "uri")
        if not uri:
            raise QuiverClientError('option "uri" is required, e.g. grpc://127.0.0.1:50051')
        username, password = option(options, "username"), option(options, "password")
        token = option(options, "token")
        if (username is None) != (password is None):
            raise QuiverClientError('options "username" and "password" go together')
        if token is not None and username is not None:
            raise QuiverClientError('give either "token" or "username"/"password", not both')
        certs = None
        path = option(options, "tls_root_certs")
        if path:
            try:
                with open(path, "rb") as f:
                    certs = f.read()
            except OSError as exc:
                raise QuiverClientError(f"cannot read tls_root_certs {path!r}: {exc}") from None
        skip = (option(options, "tls_skip_verify") or "false").strip().lower()
        if skip not in ("true", "false"):
            raise QuiverClientError(f'option "tls_skip_verify" is true or false, not {skip!r}')
        return cls(uri=uri, username=username, password=password, token=token,
                   tls_root_certs=certs,
                   tls_override_hostname=option(options, "tls_override_hostname"),
                   tls_skip_verify=skip == "true")

    def connect(self, location: str | None = None
                ) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
        """A client for ``location`` (default: ``uri``) and the call options carrying auth."""
        kwargs: dict[str, Any] = {}
        if self.tls_root_certs is not None:
            kwargs["tls_root_certs"] = self.tls_root_certs
        if self.tls_override_hostname:
            kwargs["override_hostname"] = self.tls_override_hostname
        if self.tls_skip_verify:
            kwargs["disable_server_verification"] = True
        target = location or self.uri
        try:
            client = flight.FlightClient(target, **kwargs)
        except (pa.ArrowException, ValueError) as exc:
            raise QuiverClientError(f"cannot connect to {target}: {exc}") from None
        headers: list[tuple[bytes, bytes]] = []
        if self.token is not None:
            headers.append((b"authorization", b"Bearer " + self.token.encode()))
        elif self.username is not None:
            with server_errors(target, "authentication"):
                headers.append(client.authenticate_basic_token(self.username,
                                                               self.password or ""))
        return client, flight.FlightCallOptions(headers=headers)


def option(options: Any, key: str) -> str | None:
    """``options[key]`` as text, or None."""
    value = options.get(key)
    return None if value is None else str(value)


# The server's status codes arrive as Flight errors, as the matching Arrow exceptions
# (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED) or, for some refusals raised by server
# middleware such as UNAUTHENTICATED, as a plain IOError.
SERVER_ERRORS = (flight.FlightError, pa.ArrowException, OSError)


class server_errors:
    """Turns Flight errors into ``QuiverClientError`` naming the server and the call."""

    def __init__(self, target: str, what: str) -> None:
        self.target, self.what = target, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if isinstance(exc, SERVER_ERRORS):
            raise QuiverClientError(f"quiver server {self.target}, {self.what}: "
                                   f"{server_message(exc)}") from None
        return False


def server_message(exc: BaseException) -> str:
    # pyarrow appends gRPC debug context after a ". Detail:" marker; the server's own text
    # comes first and is what a person acts on.
    text = str(exc)
    for marker in (". Detail:", ". gRPC client debug context:"):
        text = text.split(marker, 1)[0]
    return text.strip()


def _ingest_descriptor(table: str, *, create: bool, batch_id: str | None = None
                       ) -> flight.FlightDescriptor:
    if_not_exist = (_Options.TABLE_NOT_EXIST_OPTION_CREATE if create
                    else _Options.TABLE_NOT_EXIST_OPTION_FAIL)
    cmd = _Ingest(table=table, table_definition_options=_Options(
        if_not_exist=if_not_exist, if_exists=_Options.TABLE_EXISTS_OPTION_APPEND))
    if batch_id is not None:
        cmd.options[BATCH_ID_OPTION] = batch_id
    return flight.FlightDescriptor.for_command(pack(cmd))


def ingest(conn: ConnectionOptions, table: str, schema: pa.Schema,
           batches: Iterator[pa.RecordBatch], *, create: bool = False,
           batch_id: str | None = None, on_sent: Callable[[], None] | None = None) -> int:
    """Sends ``batches`` to ``table`` in one bulk-ingest DoPut; the rows the server wrote.

    With ``create`` a missing table is made from ``schema`` first; ``on_sent()``, if given, is
    called once every batch is sent (the server then indexes and commits them). The
    server's count is checked against the rows sent, so a short write is an error rather
    than silence.
    """
    client, call = conn.connect()
    sent = 0
    try:
        with server_errors(conn.uri, f"ingest into {table!r}"):
            writer, results = client.do_put(
                _ingest_descriptor(table, create=create, batch_id=batch_id), schema, call)
            try:
                for batch in batches:
                    if batch.num_rows:
                        writer.write_batch(batch)
                        sent += batch.num_rows
                writer.done_writing()
                if on_sent is not None:
                    on_sent()
                ack = results.read()
            finally:
                writer.close()
    finally:
        client.close()
    written = sent
    if ack is not None:
        result = flight_sql_pb2.DoPutUpdateResult()
        result.ParseFromString(ack.to_pybytes())
        written = result.record_count
    if written != sent:
        raise QuiverClientError(f"quiver server {conn.uri} acknowledged {written} of the "
                               f"{sent} rows sent to {table!r}")
    return written


def table_schema(conn: ConnectionOptions, table: str) -> pa.Schema | None:
    """The schema of ``table`` on the server; None when there is no such table."""
    client, call = conn.connect()
    try:
        try:
            return client.get_schema(flight.FlightDescriptor.for_path(table), call).schema
        except pa.ArrowKeyError:
            return None
        except SERVER_ERRORS as exc:
            raise QuiverClientError(f"quiver server {conn.uri}, schema of {table!r}: "
                                   f"{server_message(exc)}") from None
    finally:
        client.close()
