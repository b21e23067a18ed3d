"""Parameter types at prepare time: the inference rules over the catalog, the declared
types a client sees (embedded, raw Flight action, ADBC), the result schema planned with
stand-ins, errors that fail the prepare, and every type a client binds reading back."""

from __future__ import annotations

import datetime as dt
import decimal
import warnings

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.flight_server.sql import SqlPlanError, SqlSyntaxError, SqlTableNotFoundError, connect
from quiver.flight_server.sql.param_types import declared_type
from quiver.proto import flight_sql_pb2, pack, unpack

TYPED = ("CREATE TABLE typed (i INT, l BIGINT, f FLOAT, d DOUBLE, s VARCHAR, b BOOLEAN, "
         "dt DATE, ts TIMESTAMP, tz TIMESTAMPTZ, dec DECIMAL(10,2), bl BLOB, "
         "emb FLOAT[3]) WITH (fts = 's', vector = 'emb')")
TS_MS = pa.timestamp("ms")


@pytest.fixture(scope="module")
def conn():
    c = connect("memory://")
    c.sql(TYPED)
    c.sql("INSERT INTO typed VALUES (1, 10000000000, 0.5, 1.5, 'rust async', true, "
          "DATE '2024-01-02', TIMESTAMP '2024-01-02 03:04:05', "
          "TIMESTAMP '2024-01-02 03:04:05', 12.34, X'00ff', [1.0, 0.0, 0.0]), "
          "(2, NULL, NULL, NULL, 'python', false, NULL, NULL, NULL, NULL, NULL, "
          "[0.0, 1.0, 0.0])")
    c.sql('CREATE TABLE "Mixed" ("Name" VARCHAR, n BIGINT)')
    yield c
    c.close()


def types(conn, sql: str) -> list[pa.DataType | None]:
    return conn.parameter_types(sql)


def declared(conn, sql: str) -> list[pa.DataType]:
    return conn.prepare(sql).parameter_schema.types


# -- inference rules -------------------------------------------------------------------------


def test_a_compared_column_gives_its_type_on_either_side(conn):
    assert types(conn, "SELECT i FROM typed WHERE i = ? AND ? < l AND f >= ? AND d <> ? "
                       "AND s = ? AND b IS NOT DISTINCT FROM ? AND dt > ? AND ts <= ? "
                       "AND dec = ? AND bl = ?") == [
        pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string(), pa.bool_(),
        pa.date32(), pa.timestamp("us"), pa.decimal128(10, 2), pa.binary()]


def test_in_lists_between_bounds_and_like_patterns_take_the_column_type(conn):
    assert types(conn, "SELECT i FROM typed WHERE l IN (?, ?) AND dt BETWEEN ? AND ? "
                       "AND s LIKE ? AND ? IN (i, 2)") == [
        pa.int64(), pa.int64(), pa.date32(), pa.date32(), pa.string(), pa.int32()]


def test_insert_values_take_the_target_columns_by_position(conn):
    assert types(conn, "INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)") == [
        f.type for f in conn.open_table("typed").schema]
    assert types(conn, "INSERT INTO typed (s, i) VALUES (?, ?), (?, ?)") == [
        pa.string(), pa.int32(), pa.string(), pa.int32()]
    assert types(conn, "INSERT INTO typed (dt, l) SELECT ?, ? AS x") == [
        pa.date32(), pa.int64()]


def test_update_set_and_where_take_the_column_types(conn):
    assert types(conn, "UPDATE typed SET s = ?, d = d * ? WHERE dt < ?") == [
        pa.string(), pa.float64(), pa.date32()]
    assert types(conn, "DELETE FROM typed WHERE l = ?") == [pa.int64()]


def test_search_function_arguments_have_fixed_types(conn):
    assert types(conn, "SELECT * FROM bm25_search('typed', 's', ?, ?, ?)") == [
        pa.string(), pa.int64(), pa.string()]
    assert types(conn, "SELECT * FROM vector_search('typed', 'emb', ?, ?, ?)") == [
        pa.string(), pa.int64(), pa.int64()]
    assert types(conn, "SELECT * FROM hybrid_search('typed', 's', ?, 'emb', ?, ?)") == [
        pa.string(), pa.string(), pa.int64()]
    assert types(conn, "SELECT i FROM typed WHERE knn(emb, ?, ?)") == [pa.string(), pa.int64()]
    assert types(conn, "SELECT i, bm25(s, ?) AS r FROM typed WHERE bm25(s, ?) > ?") == [
        pa.string(), pa.string(), pa.float32()]


def test_limit_offset_and_casts_declare_their_types(conn):
    assert types(conn, "SELECT i FROM typed LIMIT ? OFFSET ?") == [pa.int64(), pa.int64()]
    assert types(conn, "SELECT CAST(? AS INT) AS a, ?::DATE AS b, TRY_CAST(? AS DOUBLE) AS c"
                 ) == [pa.int32(), pa.date32(), pa.float64()]


def test_columns_are_found_through_aliases_joins_subqueries_and_ctes(conn):
    assert types(conn, "SELECT a.i FROM typed a JOIN typed b ON a.i = b.i "
                       "WHERE b.dt = ? AND a.s = ?") == [pa.date32(), pa.string()]
    assert types(conn, "SELECT t.x FROM (SELECT l AS x, * FROM typed) t "
                       "WHERE t.x > ? AND dt = ?") == [pa.int64(), pa.date32()]
    assert types(conn, "WITH c (k, v) AS (SELECT i, s FROM typed) SELECT k FROM c "
                       "WHERE v = ? AND k = ?") == [pa.string(), pa.int32()]
    assert types(conn, "SELECT i FROM typed WHERE EXISTS "
                       "(SELECT 1 FROM \"Mixed\" m WHERE m.n = typed.l AND d > ?)"
                 ) == [pa.float64()]
    assert types(conn, "SELECT _id, score FROM bm25_search('typed', 's', 'rust', 5) "
                       "WHERE score > ? AND _id <> ? AND dt = ?") == [
        pa.float32(), pa.int64(), pa.date32()]


def test_unquoted_names_fold_and_quoted_names_match_exactly(conn):
    assert types(conn, 'SELECT n FROM "Mixed" WHERE "Name" = ? AND N = ? AND "N" = ?') == [
        pa.string(), pa.int64(), None]


def test_arithmetic_takes_the_wider_numeric_type(conn):
    assert types(conn, "SELECT i FROM typed WHERE d > ? * 2 AND l = ? + 1 AND f < i + ?") == [
        pa.float64(), pa.int64(), pa.float64()]
    assert types(conn, "SELECT s, count(*) FROM typed GROUP BY s HAVING count(*) > ? "
                       "AND avg(d) < ?") == [pa.int64(), pa.float64()]
    assert types(conn, "SELECT i FROM typed WHERE coalesce(l, ?) > 0") == [pa.int64()]


def test_a_numbered_parameter_takes_the_type_any_of_its_uses_gives(conn):
    assert types(conn, "SELECT i FROM typed WHERE $2 IS NULL OR (l = $2 AND s = $1)") == [
        pa.string(), pa.int64()]


def test_nothing_known_is_none_and_declared_text(conn):
    assert types(conn, "SELECT ? AS a, i FROM typed WHERE ? IS NULL OR upper(?) = s") == [
        None, None, None]
    assert declared(conn, "SELECT ? AS a") == [pa.string()]


def test_declared_types_are_what_the_jdbc_driver_binds(conn):
    got = declared(conn, "SELECT i FROM typed WHERE i = ? AND ts = ? AND tz = ? AND emb = ? "
                         "AND dec = ? AND bl = ?")
    assert got == [pa.int32(), TS_MS, pa.timestamp("ms", tz="UTC"), pa.string(),
                   pa.decimal128(10, 2), pa.binary()]
    assert declared_type(pa.time64("us")) == pa.time32("ms")
    assert declared_type(pa.large_string()) == pa.string()
    assert declared_type(pa.dictionary(pa.int32(), pa.string())) == pa.string()
    assert declared_type(pa.decimal256(50, 2)) == pa.float64()
    assert all(f.nullable for f in conn.prepare("SELECT i FROM typed WHERE i = ?")
               .parameter_schema)


# -- the result schema and the errors of a prepare ---------------------------------------------


def test_a_parameterized_query_has_its_result_schema_before_binding(conn):
    shape = conn.prepare("SELECT i, s FROM typed WHERE l = ? AND ts > ? LIMIT ?")
    assert shape.is_query
    assert shape.dataset_schema.names == ["i", "s"]
    assert shape.dataset_schema.field("i").type == pa.int32()


def test_search_functions_with_bound_arguments_have_their_result_schema(conn):
    for sql in ("SELECT _id, score, i FROM bm25_search('typed', 's', ?, ?, ?)",
                "SELECT _id, score, i FROM vector_search('typed', 'emb', ?, ?, ?)",
                "SELECT _id, score, i FROM hybrid_search('typed', 's', ?, 'emb', ?, ?)",
                "SELECT _id, score, i FROM token_match('typed', 's', ?)",
                "SELECT _id, score, i FROM exact_match('typed', 's', ?)"):
        assert conn.prepare(sql).dataset_schema.names == ["_id", "score", "i"], sql
    shape = conn.prepare("SELECT i, vector_distance(emb, ?) AS v FROM typed "
                         "WHERE knn(emb, ?, ?)")
    assert shape.dataset_schema.names == ["i", "v"]


def test_unaliased_parameters_do_not_clash_in_the_result_schema(conn):
    shape = conn.prepare("SELECT ?, ?, CAST(? AS INT)")
    assert len(shape.dataset_schema) == 3
    assert shape.dataset_schema.field(2).type == pa.int32()


def test_a_search_of_a_bound_table_name_has_no_schema_until_bound(conn):
    shape = conn.prepare("SELECT * FROM bm25_search(?, 's', 'rust', 5)")
    assert shape.is_query and shape.dataset_schema is None
    assert shape.parameter_schema.types == [pa.string()]


@pytest.mark.parametrize("sql", ["SELECT * FROM no_such_table WHERE id = ?",
                                 "DELETE FROM no_such_table WHERE id = ?",
                                 "INSERT INTO no_such_table VALUES (?)",
                                 "UPDATE no_such_table SET a = ? WHERE b = 1"])
def test_an_unknown_table_fails_the_prepare(conn, sql):
    with pytest.raises(SqlTableNotFoundError, match="unknown table 'no_such_table'"):
        conn.prepare(sql)


def test_unreadable_sql_and_unknown_columns_fail_the_prepare(conn):
    with pytest.raises(SqlSyntaxError, match="cannot read the statement"):
        conn.prepare("SELECT i FROM typed WHERE i = ? AND")
    with pytest.raises(SqlPlanError, match="nope"):
        conn.prepare("SELECT nope FROM typed WHERE i = ?")


# -- through Flight and ADBC -----------------------------------------------------------------


@pytest.fixture
def served(quiver_server):
    quiver_server.conn.sql(TYPED)
    return f"grpc://127.0.0.1:{quiver_server.port}"


def _prepare(client: flight.FlightClient, sql: str):
    body = pack(flight_sql_pb2.ActionCreatePreparedStatementRequest(query=sql))
    results = list(client.do_action(flight.Action("CreatePreparedStatement", body)))
    return unpack(results[0].body.to_pybytes())


def _bind(client: flight.FlightClient, command, params: pa.Table) -> None:
    writer, meta = client.do_put(flight.FlightDescriptor.for_command(pack(command)),
                                 params.schema)
    writer.write_table(params)
    writer.done_writing()
    meta.read()
    writer.close()


def test_the_prepare_action_answers_typed_parameters_and_the_result_schema(served):
    client = flight.connect(served)
    result = _prepare(client, "SELECT s FROM typed WHERE l = ? AND ts < ? AND emb = ?")
    params = pa.ipc.read_schema(pa.py_buffer(result.parameter_schema))
    assert params.names == ["$1", "$2", "$3"]
    assert params.types == [pa.int64(), TS_MS, pa.string()]
    assert pa.ipc.read_schema(pa.py_buffer(result.dataset_schema)).names == ["s"]


def test_the_prepare_action_fails_with_the_statement_status(served):
    client = flight.connect(served)
    with pytest.raises(pa.ArrowKeyError, match="unknown table 'nope'"):  # NOT_FOUND
        _prepare(client, "SELECT * FROM nope WHERE a = ?")
    with pytest.raises(pa.ArrowInvalid, match="cannot read the statement"):
        _prepare(client, "SELECT * FROM typed WHERE a = ? AND")


# What the JDBC driver sends for each declared type, and the other types a client may bind.
_ROW = {
    "i": pa.array([7], pa.int32()), "l": pa.array([-9_000_000_000], pa.int64()),
    "f": pa.array([0.25], pa.float32()), "d": pa.array([-0.5], pa.float64()),
    "s": pa.array(["it's"], pa.string()), "b": pa.array([False], pa.bool_()),
    "dt": pa.array([dt.date(1999, 12, 31)], pa.date32()),
    "ts": pa.array([dt.datetime(2000, 2, 29, 23, 59, 58)], TS_MS),
    "tz": pa.array([dt.datetime(2000, 2, 29, 23, 59, 58, tzinfo=dt.UTC)],
                   pa.timestamp("ms", tz="UTC")),
    "dec": pa.array([decimal.Decimal("-1.25")], pa.decimal128(10, 2)),
    "bl": pa.array([b"\x00\x01'"], pa.binary()),
    "emb": pa.array(["[0.5, 0.25, 0.0]"], pa.string()),
}


def test_rows_bound_with_the_declared_types_insert_and_read_back(served, quiver_server):
    client = flight.connect(served)
    prepared = _prepare(client, "INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    declared_schema = pa.ipc.read_schema(pa.py_buffer(prepared.parameter_schema))
    update = flight_sql_pb2.CommandPreparedStatementUpdate(
        prepared_statement_handle=prepared.prepared_statement_handle)
    row = pa.table(list(_ROW.values()), names=declared_schema.names)
    assert row.schema.types == declared_schema.types
    _bind(client, update, row)
    nulls = pa.table([pa.array([None], t) for t in declared_schema.types],
                     names=declared_schema.names)
    _bind(client, update, nulls.set_column(0, "$1", pa.array([8], pa.int32())))
    got = quiver_server.conn.sql("SELECT * FROM typed ORDER BY i").to_pylist()
    assert got[0] == {"i": 7, "l": -9_000_000_000, "f": 0.25, "d": -0.5, "s": "it's",
                      "b": False, "dt": dt.date(1999, 12, 31),
                      "ts": dt.datetime(2000, 2, 29, 23, 59, 58),
                      "tz": dt.datetime(2000, 2, 29, 23, 59, 58, tzinfo=dt.UTC),
                      "dec": decimal.Decimal("-1.25"), "bl": b"\x00\x01'",
                      "emb": [0.5, 0.25, 0.0]}
    assert got[1] == {k: (8 if k == "i" else None) for k in _ROW}


@pytest.mark.parametrize("value", [
    pa.array([3], pa.int8()), pa.array([3], pa.int16()), pa.array([3], pa.uint32()),
    pa.array([3.0], pa.float32()), pa.array(["3"], pa.string()),
    pa.array([decimal.Decimal("3")], pa.decimal128(5, 0)), pa.array([None], pa.null())])
def test_a_query_parameter_of_any_type_a_client_sends_binds(served, quiver_server, value):
    quiver_server.conn.sql("INSERT INTO typed (i, s) VALUES (3, 'three'), (4, 'four')")
    client = flight.connect(served)
    prepared = _prepare(client, "SELECT s FROM typed WHERE i = ? OR (? IS NULL AND i = 4)")
    query = flight_sql_pb2.CommandPreparedStatementQuery(
        prepared_statement_handle=prepared.prepared_statement_handle)
    _bind(client, query, pa.table({"a": value, "b": value}))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(query)))
    got = client.do_get(info.endpoints[0].ticket).read_all().column("s").to_pylist()
    assert got == (["four"] if value.null_count else ["three"])


def test_adbc_sees_the_parameter_schema_and_binds_typed_rows(served, quiver_server):
    quiver_server.conn.sql("INSERT INTO typed (i, s, dt, ts) VALUES "
                           "(1, 'a', DATE '2024-01-02', TIMESTAMP '2024-01-02 03:04:05'), "
                           "(2, 'b', DATE '2024-01-03', TIMESTAMP '2024-01-03 00:00:00')")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        db = adbc.connect(served)
    try:
        cur = db.cursor()
        sql = "SELECT i FROM typed WHERE dt = ? AND ts = ? AND s <> ? ORDER BY i"
        cur.adbc_prepare(sql)
        schema = pa.schema(cur.adbc_statement.get_parameter_schema())
        assert schema.types == [pa.date32(), TS_MS, pa.string()]
        cur.execute(sql, pa.record_batch({
            "a": pa.array([dt.date(2024, 1, 2)], pa.date32()),
            "b": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5)], TS_MS),
            "c": pa.array(["z"])}))
        assert cur.fetchall() == [(1,)]
    finally:
        db.close()
