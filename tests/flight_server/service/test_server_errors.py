"""Errors reach clients as gRPC status codes with the server's message and no stack frames:
seen from a raw gRPC client, from pyarrow.flight and from ADBC."""

from __future__ import annotations

import warnings

import adbc_driver_flightsql.dbapi as adbc
import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode
from google.protobuf import any_pb2

from quiver.flight_server.service.errors import status_of
from quiver.flight_server.sql import errors as sql_errors
from quiver.proto import flight_pb2, flight_sql_pb2, pack
from quiver.superfile.errors import SuperfileError
from quiver.supertable import errors as table_errors


@pytest.fixture
def docs(quiver_server):
    quiver_server.conn.sql("CREATE TABLE d (id BIGINT, emb FLOAT[4]) WITH (vector = 'emb')")
    quiver_server.conn.sql("INSERT INTO d VALUES (1, [0.1, 0.2, 0.3, 0.4])")
    return quiver_server


def _grpc_flight_info(uri: str, command: bytes) -> grpc.RpcError:
    """Calls GetFlightInfo from a plain gRPC client; returns the error it got."""
    channel = grpc.insecure_channel(uri.removeprefix("grpc://"))
    call = channel.unary_unary("/arrow.flight.protocol.FlightService/GetFlightInfo",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=lambda b: b)
    descriptor = flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.CMD, cmd=command)
    try:
        call(descriptor, timeout=30)
    except grpc.RpcError as exc:
        return exc
    finally:
        channel.close()
    raise AssertionError("the call succeeded")


def _query(sql: str) -> bytes:
    return pack(flight_sql_pb2.CommandStatementQuery(query=sql))


@pytest.mark.parametrize(("sql", "code", "message"), [
    ("SELEC 1", grpc.StatusCode.INVALID_ARGUMENT, "SELEC"),
    ("SELECT * FROM nowhere", grpc.StatusCode.NOT_FOUND, "nowhere"),
    ("INSERT INTO d VALUES (2, [0.1, 0.2])", grpc.StatusCode.INVALID_ARGUMENT, "4 values"),
    ("CREATE TABLE d (x BIGINT)", grpc.StatusCode.ALREADY_EXISTS, "already exists"),
])
def test_grpc_status_code_and_message_of_statement_errors(flight_uri, docs, sql, code,
                                                          message) -> None:
    err = _grpc_flight_info(flight_uri, _query(sql))
    assert err.code() == code
    assert message in err.details()
    assert "Traceback" not in err.details() and ".py" not in err.details()


def test_pyarrow_client_sees_the_matching_exception_classes(flight_uri, docs) -> None:
    client = flight.connect(flight_uri)
    with pytest.raises(pa.ArrowInvalid, match="SELEC"):
        client.get_flight_info(flight.FlightDescriptor.for_command(_query("SELEC 1")))
    with pytest.raises(pa.ArrowKeyError, match="nowhere"):
        client.get_flight_info(flight.FlightDescriptor.for_command(
            _query("SELECT * FROM nowhere")))
    with pytest.raises(pa.ArrowInvalid, match="vector"):
        client.do_get(flight.Ticket(
            b"SELECT id FROM vector_search('d', 'emb', '[0.1, 0.2]', 3)")).read_all()


def test_adbc_exceptions_carry_status_and_message(flight_uri, docs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(flight_uri)
    try:
        cur = conn.cursor()
        with pytest.raises(adbc.ProgrammingError) as bad:
            cur.execute("SELEC 1")
        assert bad.value.status_code == AdbcStatusCode.INVALID_ARGUMENT
        with pytest.raises(adbc.ProgrammingError) as missing:
            conn.cursor().execute("SELECT * FROM nowhere")
        assert missing.value.status_code == AdbcStatusCode.NOT_FOUND
        assert "unknown table 'nowhere'" in str(missing.value)
        with pytest.raises(adbc.ProgrammingError) as vec:
            conn.cursor().execute("INSERT INTO d VALUES (?, ?)", (5, [0.5, 0.5]))
        assert vec.value.status_code == AdbcStatusCode.INVALID_ARGUMENT
        assert "4 values" in str(vec.value)
        # The server keeps serving after every one of these.
        ok = conn.cursor()
        ok.execute("SELECT count(*) FROM d")
        assert ok.fetchall() == [(1,)]
    finally:
        conn.close()


def test_unknown_commands_and_actions_are_unimplemented_by_name(flight_uri) -> None:
    client = flight.connect(flight_uri)
    substrait = pack(flight_sql_pb2.CommandStatementSubstraitPlan())
    with pytest.raises(pa.ArrowNotImplementedError, match="CommandStatementSubstraitPlan"):
        client.get_flight_info(flight.FlightDescriptor.for_command(substrait))
    foreign = any_pb2.Any(type_url="type.googleapis.com/acme.Frobnicate", value=b"")
    err = _grpc_flight_info(flight_uri, foreign.SerializeToString())
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED and "acme.Frobnicate" in err.details()
    with pytest.raises(pa.ArrowNotImplementedError, match="unknown action 'Frobnicate'"):
        list(client.do_action(flight.Action("Frobnicate", b"")))
    begin = pack(flight_sql_pb2.ActionBeginTransactionRequest())
    with pytest.raises(pa.ArrowNotImplementedError, match="transactions are not supported"):
        list(client.do_action(flight.Action("BeginTransaction", begin)))
    assert {a.type for a in client.list_actions()} >= {
        "CreatePreparedStatement", "ClosePreparedStatement", "CancelFlightInfo", "CancelQuery"}


def test_corrupt_table_metadata_is_internal_with_a_short_message(flight_uri, quiver_server,
                                                                 server_root) -> None:
    (server_root / "_catalog").mkdir(exist_ok=True)
    (server_root / "_catalog" / "broken.json").write_text("{not json")
    err = _grpc_flight_info(flight_uri, _query("SELECT * FROM broken"))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "broken" in err.details() and "Traceback" not in err.details()
    # Still serving.
    client = flight.connect(flight_uri)
    assert client.do_get(flight.Ticket(b"SELECT 1 AS one")).read_all().to_pylist() == [
        {"one": 1}]


def test_unexpected_exception_is_internal_and_logged(caplog) -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as exc:
        raised = exc
    with caplog.at_level("ERROR", logger="quiver.flight_server.service.errors"):
        code, message = status_of(raised, "DoGet")
    assert code == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" in message and "server log" in message
    assert "division" not in message
    assert "DoGet failed unexpectedly" in caplog.text and "Traceback" in caplog.text


@pytest.mark.parametrize(("exc", "expected"), [
    (sql_errors.SqlSyntaxError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (sql_errors.SqlPlanError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (sql_errors.SqlTableNotFoundError("x"), grpc.StatusCode.NOT_FOUND),
    (table_errors.TableNotFoundError("x"), grpc.StatusCode.NOT_FOUND),
    (table_errors.TableExistsError("x"), grpc.StatusCode.ALREADY_EXISTS),
    (table_errors.TableSchemaError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (table_errors.CommitConflictError("x"), grpc.StatusCode.ABORTED),
    (table_errors.StorageUnavailableError("x"), grpc.StatusCode.UNAVAILABLE),
    (table_errors.StoragePermissionError("x"), grpc.StatusCode.PERMISSION_DENIED),
    (SuperfileError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (flight.FlightCancelledError("x"), grpc.StatusCode.CANCELLED),
    (pa.ArrowNotImplementedError("x"), grpc.StatusCode.UNIMPLEMENTED),
])
def test_each_error_family_maps_to_its_status_code(exc, expected) -> None:
    assert status_of(exc)[0] == expected
