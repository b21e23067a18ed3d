"""Statements that read no table, through the server: ADBC gets the same rows on every
run (NULLs and bound parameters included), planning and run errors reach the client as
INVALID_ARGUMENT on every run, and ticket signatures keep their definition (tickets
signed by servers of another version on the same root still open)."""

from __future__ import annotations

import hashlib
import warnings

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import handles, keys
from quiver.flight_server.service.errors import InvalidArgument
from quiver.proto import flight_sql_pb2, pack


def _adbc(uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adbc.connect(uri)


def test_table_free_statements_return_the_same_rows_on_every_run(flight_uri) -> None:
    conn = _adbc(flight_uri)
    try:
        cur = conn.cursor()
        for _ in range(3):
            cur.execute("SELECT 1 AS one")
            assert cur.fetch_arrow_table().to_pylist() == [{"one": 1}]
            cur.execute("SELECT NULL AS n, CAST(NULL AS BIGINT) AS i, 'x' AS s")
            assert cur.fetch_arrow_table().to_pylist() == [{"n": None, "i": None, "s": "x"}]
        for value in (5, 6, None):
            cur.execute("SELECT ? AS v", parameters=(value,))
            assert cur.fetch_arrow_table().column("v").to_pylist() == [value]
        cur.close()
    finally:
        conn.close()


@pytest.mark.parametrize("sql", ["SELECT no_such_function(1) AS x", "SELECT 1 / 0 AS x"])
def test_errors_of_table_free_statements_are_invalid_argument_on_every_run(flight_uri,
                                                                           sql) -> None:
    client = flight.connect(flight_uri)
    command = flight.FlightDescriptor.for_command(
        pack(flight_sql_pb2.CommandStatementQuery(query=sql)))
    try:
        for _ in range(2):
            # A planning error fails GetFlightInfo; a run error fails the DoGet.
            # pyarrow.flight raises INVALID_ARGUMENT as ArrowInvalid.
            with pytest.raises(pa.ArrowInvalid, match="invalid argument"):
                info = client.get_flight_info(command)
                client.do_get(info.endpoints[0].ticket).read_all()
    finally:
        client.close()


def test_the_ticket_signature_is_keyed_blake2b_over_length_prefixed_parts() -> None:
    key = b"k" * 32
    parts = (b"qv2", b"", b"body" * 100)
    h = hashlib.blake2b(key=key, digest_size=keys.MAC_BYTES)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    assert keys.mac(key, *parts) == h.digest()
    assert keys.mac(key, parts[2]) == hashlib.blake2b(
        len(parts[2]).to_bytes(8, "little") + parts[2], key=key,
        digest_size=keys.MAC_BYTES).digest()
    # No two splits of the same bytes sign alike.
    assert keys.mac(key, b"ab", b"c") != keys.mac(key, b"a", b"bc")


def test_a_ticket_signed_by_another_key_or_edited_is_refused() -> None:
    signer = handles.TicketSigner(b"a" * 32)
    other = handles.TicketSigner(b"b" * 32)
    sealed = signer.seal(handles.encode_sql("SELECT 1 AS one"))
    assert signer.decode(sealed).sql == "SELECT 1 AS one"
    with pytest.raises(InvalidArgument, match="signature"):
        other.decode(sealed)
    edited = sealed.replace(b"SELECT 1", b"SELECT 2")
    with pytest.raises(InvalidArgument, match="signature"):
        signer.decode(edited)
