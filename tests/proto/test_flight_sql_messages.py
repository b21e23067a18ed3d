"""Flight SQL messages: Any packing round trips, clear errors, spec field numbers."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flightsql import flightsql_pb2 as independent
from google.protobuf import any_pb2, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver import proto
from quiver.proto import flight_pb2
from quiver.proto import flight_sql_pb2 as sql

REPO = Path(__file__).resolve().parents[2]

texts = st.text(max_size=40)
blobs = st.binary(max_size=40)
optional_texts = st.none() | texts
optional_blobs = st.none() | blobs


def _set_present(msg, **fields):
    """Set only the fields that are not None, so presence round trips too."""
    for name, value in fields.items():
        if value is not None:
            setattr(msg, name, value)
    return msg


@settings(max_examples=60, deadline=None)
@given(
    catalog=optional_texts,
    db_schema=optional_texts,
    table=optional_texts,
    types=st.lists(texts, max_size=4),
    include_schema=st.booleans(),
)
def test_get_tables_round_trips_with_field_presence(
    catalog, db_schema, table, types, include_schema
):
    msg = _set_present(
        sql.CommandGetTables(table_types=types, include_schema=include_schema),
        catalog=catalog,
        db_schema_filter_pattern=db_schema,
        table_name_filter_pattern=table,
    )
    back = proto.unpack(proto.pack(msg))
    assert type(back) is sql.CommandGetTables
    assert back == msg
    assert back.HasField("catalog") == (catalog is not None)
    assert back.HasField("table_name_filter_pattern") == (table is not None)


@settings(max_examples=60, deadline=None)
@given(query=texts, transaction_id=optional_blobs)
def test_statement_query_and_update_round_trip(query, transaction_id):
    for cls in (sql.CommandStatementQuery, sql.CommandStatementUpdate):
        msg = _set_present(cls(query=query), transaction_id=transaction_id)
        back = proto.unpack(proto.pack(msg))
        assert type(back) is cls
        assert back.query == query
        assert back.HasField("transaction_id") == (transaction_id is not None)


@settings(max_examples=60, deadline=None)
@given(
    table=texts,
    schema=optional_texts,
    catalog=optional_texts,
    temporary=st.booleans(),
    if_not_exist=st.sampled_from([0, 1, 2]),
    if_exists=st.sampled_from([0, 1, 2, 3]),
    options=st.dictionaries(texts, texts, max_size=4),
)
def test_statement_ingest_round_trips_options_and_nested_enums(
    table, schema, catalog, temporary, if_not_exist, if_exists, options
):
    opts = sql.CommandStatementIngest.TableDefinitionOptions(
        if_not_exist=if_not_exist, if_exists=if_exists
    )
    msg = _set_present(
        sql.CommandStatementIngest(
            table=table, temporary=temporary, options=options, table_definition_options=opts
        ),
        schema=schema,
        catalog=catalog,
    )
    back = proto.unpack(proto.pack(msg))
    assert back == msg
    assert dict(back.options) == options
    assert back.table_definition_options.if_exists == if_exists


@settings(max_examples=40, deadline=None)
@given(handle=blobs, dataset=blobs, params=blobs, is_update=st.none() | st.booleans())
def test_prepared_statement_messages_round_trip(handle, dataset, params, is_update):
    result = _set_present(
        sql.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle, dataset_schema=dataset, parameter_schema=params
        ),
        is_update=is_update,
    )
    assert proto.unpack(proto.pack(result)) == result
    for cls in (
        sql.CommandPreparedStatementQuery,
        sql.CommandPreparedStatementUpdate,
        sql.ActionClosePreparedStatementRequest,
    ):
        msg = cls(prepared_statement_handle=handle)
        assert proto.unpack(proto.pack(msg)) == msg
    ticket = sql.TicketStatementQuery(statement_handle=handle)
    assert proto.unpack(proto.pack(ticket)) == ticket


def test_packed_bytes_carry_the_spec_type_url():
    env = any_pb2.Any()
    env.ParseFromString(proto.pack(sql.CommandGetCatalogs()))
    assert env.type_url == "type.googleapis.com/arrow.flight.protocol.sql.CommandGetCatalogs"
    assert proto.type_url(sql.CommandGetSqlInfo) == (
        "type.googleapis.com/arrow.flight.protocol.sql.CommandGetSqlInfo"
    )


def test_every_flight_sql_message_is_known_to_unpack():
    names = set(sql.DESCRIPTOR.message_types_by_name)
    assert {n.rpartition(".")[2] for n in proto.MESSAGES} == names
    for name in names:
        msg = getattr(sql, name)()
        assert type(proto.unpack(proto.pack(msg))) is type(msg)


def test_unknown_type_url_gives_a_clear_error():
    env = any_pb2.Any(type_url="type.googleapis.com/arrow.flight.protocol.sql.CommandNope")
    with pytest.raises(proto.ProtocolMessageError, match="unknown Flight SQL message type"):
        proto.unpack(env.SerializeToString())
    other = any_pb2.Any()
    other.Pack(timestamp_pb2.Timestamp(seconds=1))
    with pytest.raises(proto.ProtocolMessageError, match=r"google\.protobuf\.Timestamp"):
        proto.unpack(other.SerializeToString())
    with pytest.raises(ValueError, match="<empty>"):
        proto.unpack(b"")


@pytest.mark.parametrize("data", [b"\xff", b"\xff\xff\xff", b"garbage!", b"\x0a\x7f"])
def test_garbage_bytes_give_a_clear_error(data):
    with pytest.raises(proto.ProtocolMessageError, match=r"google\.protobuf\.Any"):
        proto.unpack(data)


def test_garbled_body_of_a_known_type_gives_a_clear_error():
    env = any_pb2.Any(type_url=proto.type_url(sql.CommandGetTables), value=b"\x0a\xff\x01")
    with pytest.raises(proto.ProtocolMessageError, match="CommandGetTables does not parse"):
        proto.unpack(env.SerializeToString())


def test_pack_refuses_messages_outside_flight_sql():
    with pytest.raises(TypeError, match="not a Flight SQL message"):
        proto.pack(flight_pb2.Ticket(ticket=b"x"))


def _fields(cls) -> dict[str, int]:
    return {f.name: f.number for f in cls.DESCRIPTOR.fields}


def test_field_numbers_match_the_spec():
    assert _fields(sql.CommandGetTables) == {
        "catalog": 1,
        "db_schema_filter_pattern": 2,
        "table_name_filter_pattern": 3,
        "table_types": 4,
        "include_schema": 5,
    }
    assert _fields(sql.CommandStatementIngest) == {
        "table_definition_options": 1,
        "table": 2,
        "schema": 3,
        "catalog": 4,
        "temporary": 5,
        "transaction_id": 6,
        "options": 1000,
    }
    assert _fields(sql.CommandStatementIngest.TableDefinitionOptions) == {
        "if_not_exist": 1,
        "if_exists": 2,
    }
    assert _fields(sql.ActionCreatePreparedStatementResult) == {
        "prepared_statement_handle": 1,
        "dataset_schema": 2,
        "parameter_schema": 3,
        "is_update": 4,
    }
    assert _fields(sql.CommandGetCrossReference) == {
        "pk_catalog": 1,
        "pk_db_schema": 2,
        "pk_table": 3,
        "fk_catalog": 4,
        "fk_db_schema": 5,
        "fk_table": 6,
    }
    assert _fields(sql.DoPutUpdateResult) == {"record_count": 1}
    assert _fields(flight_pb2.CancelFlightInfoRequest) == {"info": 1}
    assert _fields(flight_pb2.FlightData) == {
        "flight_descriptor": 1,
        "data_header": 2,
        "app_metadata": 3,
        "data_body": 1000,
    }


def test_enum_values_match_the_spec():
    assert sql.SqlInfo.Value("FLIGHT_SQL_SERVER_NAME") == 0
    assert sql.FLIGHT_SQL_SERVER_BULK_INGESTION == 10
    assert sql.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT == 100
    assert sql.SQL_DDL_CATALOG == 500
    assert sql.SQL_IDENTIFIER_QUOTE_CHAR == 504
    assert sql.SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED == 576
    assert len(sql.SqlInfo.values()) == 14 + 77
    assert sql.XDBC_BIGINT == -5 and sql.XDBC_WVARCHAR == -9 and sql.XDBC_TIMESTAMP == 93
    assert sql.XdbcDatetimeSubcode.Value("XDBC_SUBCODE_DATE") == sql.XDBC_SUBCODE_YEAR == 1
    assert sql.XDBC_SUBCODE_INTERVAL_MINUTE_TO_SECOND == 113
    assert sql.SQL_TRANSACTION_SERIALIZABLE == 4
    assert sql.NULLABILITY_UNKNOWN == 2 and sql.SEARCHABLE_FULL == 3
    assert sql.SET_DEFAULT == 4
    ingest_options = sql.CommandStatementIngest.TableDefinitionOptions
    assert ingest_options.TABLE_EXISTS_OPTION_REPLACE == 3
    assert ingest_options.TABLE_NOT_EXIST_OPTION_FAIL == 2
    assert sql.ActionEndTransactionRequest.END_TRANSACTION_ROLLBACK == 2
    assert sql.ActionCancelQueryResult.CANCEL_RESULT_NOT_CANCELLABLE == 3
    assert flight_pb2.CANCEL_STATUS_CANCELLING == 2


def test_bytes_agree_with_an_independent_compilation_of_the_spec():
    # flightsql-dbapi ships its own generated module from the Arrow definition; both must
    # load in one process and read each other's bytes.
    msg = sql.CommandGetCrossReference(
        pk_catalog="a", pk_db_schema="b", pk_table="c", fk_db_schema="e", fk_table="f"
    )
    theirs = independent.CommandGetCrossReference()
    env = any_pb2.Any()
    env.ParseFromString(proto.pack(msg))
    assert env.Unpack(theirs)
    assert theirs.SerializeToString(deterministic=True) == msg.SerializeToString(
        deterministic=True
    )
    assert not theirs.HasField("fk_catalog") and theirs.fk_db_schema == "e"
    tables = independent.CommandGetTables(catalog="c", table_types=["TABLE"], include_schema=True)
    env = any_pb2.Any()
    env.Pack(tables)
    back = proto.unpack(env.SerializeToString())
    assert (back.catalog, list(back.table_types), back.include_schema) == ("c", ["TABLE"], True)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_committed_modules_are_what_make_proto_generates(tmp_path):
    (tmp_path / "proto").mkdir()
    for name in ("FlightSql.proto", "Flight.proto"):
        shutil.copy(REPO / "proto" / name, tmp_path / "proto" / name)
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    subprocess.run(
        ["make", "-s", "proto", f"PYTHON={sys.executable}"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in ("flight_sql_pb2.py", "flight_pb2.py", "flight_sql_pb2.pyi", "flight_pb2.pyi"):
        assert filecmp.cmp(tmp_path / "proto" / name, REPO / "proto" / name, shallow=False), name
