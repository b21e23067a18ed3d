"""SqlInfo and XDBC type info over plain ``pyarrow.flight``: advertised and streamed schemas."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.service import metadata
from quiver.proto import flight_sql_pb2 as pb
from quiver.proto import pack


@pytest.fixture
def client(flight_uri):
    c = flight.connect(flight_uri)
    try:
        yield c
    finally:
        c.close()


def _fetch(client, command) -> tuple[pa.Schema, pa.Table]:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(command)))
    tables = [client.do_get(ep.ticket).read_all() for ep in info.endpoints]
    return info.schema, pa.concat_tables(tables)


def test_sql_info_over_flight_keeps_its_union_schema_and_values(client):
    schema, table = _fetch(client, pb.CommandGetSqlInfo(info=[0, 504, 9999, 517]))
    assert schema.equals(metadata.SCHEMAS["CommandGetSqlInfo"])
    assert table.schema.equals(metadata.SCHEMAS["CommandGetSqlInfo"])
    assert table.column("info_name").to_pylist() == [0, 504, 517]
    values = table.column("value").to_pylist()
    assert values[:2] == ["Quiver", '"']
    assert dict(values[2])[19]  # SQL_CONVERT_VARCHAR converts to something


def test_all_sql_info_over_flight_equals_the_local_answer(client):
    _, table = _fetch(client, pb.CommandGetSqlInfo())
    assert table.equals(metadata.sql_info([]))


def test_xdbc_type_info_over_flight_filters_by_data_type(client):
    schema, table = _fetch(client, pb.CommandGetXdbcTypeInfo(data_type=93))
    assert schema.equals(metadata.SCHEMAS["CommandGetXdbcTypeInfo"])
    assert table.column("type_name").to_pylist() == ["TIMESTAMP", "TIMESTAMPTZ"]
    _, everything = _fetch(client, pb.CommandGetXdbcTypeInfo())
    assert everything.equals(metadata.xdbc_type_info(None))


def test_primary_keys_over_flight_are_empty_in_the_declared_schema(client):
    schema, table = _fetch(client, pb.CommandGetPrimaryKeys(table="docs"))
    assert schema.equals(metadata.SCHEMAS["CommandGetPrimaryKeys"])
    assert table.num_rows == 0
