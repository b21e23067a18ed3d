"""SqlInfo answers and XDBC type info: values, union members, and claims the engine backs.

Ids and ordinals below are written from the specification's enums (FlightSql.proto),
not taken from the code under test.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from datafusion import SessionConfig, SessionContext

from quiver.flight_server.service import metadata, sql_info
from quiver.flight_server.sql import connect

# Union type codes, in the specification's member order.
STRING, BOOL, BIGINT, BITMASK, STRING_LIST, INT_MAP = range(6)


def _root() -> str:
    return f"memory://metadata-info-{uuid.uuid4().hex}"


def answers(ids: list[int]) -> dict[int, tuple[int, object]]:
    t = metadata.sql_info(ids)
    codes = t.column("value").chunk(0).type_codes.to_pylist()
    return {name: (code, value) for name, code, value in
            zip(t.column("info_name").to_pylist(), codes, t.column("value").to_pylist(),
                strict=True)}


@pytest.mark.parametrize(("info_id", "code", "value"), [
    (0, STRING, "Quiver"),  # FLIGHT_SQL_SERVER_NAME
    (2, STRING, pa.__version__),  # FLIGHT_SQL_SERVER_ARROW_VERSION
    (3, BOOL, False),  # FLIGHT_SQL_SERVER_READ_ONLY
    (4, BOOL, True),  # FLIGHT_SQL_SERVER_SQL
    (5, BOOL, False),  # FLIGHT_SQL_SERVER_SUBSTRAIT
    (8, BITMASK, 0),  # FLIGHT_SQL_SERVER_TRANSACTION: SQL_SUPPORTED_TRANSACTION_NONE
    (9, BOOL, True),  # FLIGHT_SQL_SERVER_CANCEL
    (10, BOOL, True),  # FLIGHT_SQL_SERVER_BULK_INGESTION
    (11, BOOL, False),  # FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED
    (100, BITMASK, 0),  # FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT
    (101, BITMASK, 0),  # FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT
    (500, BOOL, False),  # SQL_DDL_CATALOG
    (501, BOOL, False),  # SQL_DDL_SCHEMA
    (502, BOOL, True),  # SQL_DDL_TABLE
    (503, BITMASK, 3),  # SQL_IDENTIFIER_CASE: SQL_CASE_SENSITIVITY_LOWERCASE
    (504, STRING, '"'),  # SQL_IDENTIFIER_QUOTE_CHAR
    (507, BITMASK, 0),  # SQL_NULL_ORDERING: SQL_NULLS_SORTED_HIGH
    (513, STRING, "\\"),  # SQL_SEARCH_STRING_ESCAPE
    (515, BOOL, True),  # SQL_SUPPORTS_COLUMN_ALIASING
    (516, BOOL, True),  # SQL_NULL_PLUS_NULL_IS_NULL
    (525, BITMASK, 0b11),  # SQL_SUPPORTED_GRAMMAR: minimum + core
    (526, BITMASK, 0b1),  # SQL_ANSI92_SUPPORTED_LEVEL: entry
    (528, BITMASK, 2),  # SQL_OUTER_JOINS_SUPPORT_LEVEL: SQL_FULL_OUTER_JOINS
    (540, BITMASK, 0b11),  # SQL_SUPPORTED_UNIONS: UNION, UNION ALL
    (544, BIGINT, 0),  # SQL_MAX_COLUMNS_IN_GROUP_BY: no limit
    (559, BIGINT, 128),  # SQL_MAX_TABLE_NAME_LENGTH
    (562, BITMASK, 0),  # SQL_DEFAULT_TRANSACTION_ISOLATION: SQL_TRANSACTION_NONE
    (563, BOOL, False),  # SQL_TRANSACTIONS_SUPPORTED
])
def test_sql_info_answers_id_with_value_in_its_union_member(info_id, code, value):
    assert answers([info_id]) == {info_id: (code, value)}


def test_server_version_is_a_string():
    code, value = answers([1])[1]
    assert code == STRING and isinstance(value, str) and value


def test_unknown_ids_are_left_out_and_known_ones_keep_request_order():
    t = metadata.sql_info([502, 9999, 0, 10_000, 504])
    assert t.column("info_name").to_pylist() == [502, 0, 504]
    assert metadata.sql_info([9999]).num_rows == 0


def test_no_ids_means_every_known_id_once():
    got = metadata.sql_info([]).column("info_name").to_pylist()
    assert got == sorted(set(got))
    assert {0, 1, 2, 3, 4, 8, 9, 502, 504, 517, 563} <= set(got)
    assert got == sql_info.known_ids()


def test_every_union_member_is_used_and_offsets_point_into_its_child():
    value = metadata.sql_info([]).column("value").chunk(0)
    value.validate(full=True)
    assert set(value.type_codes.to_pylist()) == {STRING, BOOL, BIGINT, BITMASK, STRING_LIST,
                                                INT_MAP}


def test_string_lists_and_the_convert_map_decode():
    got = answers([508, 509, 517])
    assert got[508][0] == STRING_LIST and "EXPLAIN" in got[508][1]
    assert got[509][0] == STRING_LIST and "abs" in got[509][1]
    code, pairs = got[517]
    assert code == INT_MAP
    convert = dict(pairs)
    # SqlSupportsConvert: BIGINT=0, VARCHAR=19
    assert 19 in convert[0] and 0 in convert[19]


def _datafusion_functions() -> set[str]:
    ctx = SessionContext(SessionConfig().with_information_schema(True))
    t = ctx.sql("SELECT DISTINCT routine_name FROM information_schema.routines").to_arrow_table()
    return set(t.column(0).to_pylist())


def test_listed_numeric_string_datetime_functions_exist_in_the_engine():
    known = _datafusion_functions()
    for info_id in (509, 510, 512):
        listed = answers([info_id])[info_id][1]
        assert listed and set(listed) <= known, (info_id, set(listed) - known)


# A sample SQL expression of each SqlSupportsConvert type the map names.
_SAMPLE = {0: "CAST(7 AS BIGINT)", 1: "CAST('ab' AS BYTEA)", 2: "true", 3: "'7'",
           4: "DATE '2024-01-02'", 5: "CAST(7 AS DECIMAL(10,2))", 6: "CAST(7 AS REAL)",
           7: "CAST(7 AS INT)", 13: "CAST(7 AS REAL)", 14: "CAST(7 AS SMALLINT)",
           16: "TIMESTAMP '2024-01-02 03:04:05'", 17: "CAST(7 AS TINYINT)",
           18: "CAST('ab' AS BYTEA)", 19: "'7'"}
_TARGET = {0: "BIGINT", 1: "BYTEA", 2: "BOOLEAN", 3: "VARCHAR", 4: "DATE",
           5: "DECIMAL(10,2)", 6: "REAL", 7: "INT", 13: "REAL", 14: "SMALLINT",
           16: "TIMESTAMP", 17: "TINYINT", 18: "BYTEA", 19: "VARCHAR"}
# Text samples that parse as the target type.
_TEXT_FOR = {2: "'true'", 4: "'2024-01-02'", 16: "'2024-01-02 03:04:05'"}


def test_every_conversion_the_map_claims_runs_as_a_cast():
    convert = dict(answers([517])[517][1])
    conn = connect(_root())
    try:
        failures = []
        for src, targets in convert.items():
            for dst in targets:
                sample = _TEXT_FOR.get(dst, _SAMPLE[src]) if src in (3, 19) else _SAMPLE[src]
                q = f"SELECT CAST({sample} AS {_TARGET[dst]}) AS v"
                try:
                    conn.sql(q)
                except Exception as exc:
                    failures.append((src, dst, q, str(exc)[:80]))
        assert not failures, failures
    finally:
        conn.close()


def test_xdbc_type_info_is_sorted_by_data_type_then_name():
    t = metadata.xdbc_type_info(None)
    keys = list(zip(t.column("data_type").to_pylist(), t.column("type_name").to_pylist(),
                    strict=True))
    assert keys == sorted(keys)
    assert t.num_rows >= 10


@pytest.mark.parametrize(("data_type", "names"), [
    (-7, ["BOOLEAN"]),  # XDBC_BIT
    (-5, ["BIGINT", "UBIGINT"]),  # XDBC_BIGINT
    (4, ["INTEGER", "UINTEGER"]),  # XDBC_INTEGER
    (8, ["DOUBLE"]),  # XDBC_DOUBLE
    (12, ["VARCHAR"]),  # XDBC_VARCHAR
    (91, ["DATE"]),  # XDBC_DATE
    (92, []),  # XDBC_TIME: not a type the engine stores
    (12345, []),
])
def test_xdbc_type_info_filters_by_data_type(data_type, names):
    t = metadata.xdbc_type_info(data_type)
    assert t.column("type_name").to_pylist() == names
    assert t.schema.equals(metadata.SCHEMAS["CommandGetXdbcTypeInfo"])


def test_datetime_types_report_the_generic_code_and_a_subcode():
    rows = {r["type_name"]: r for r in metadata.xdbc_type_info(None).to_pylist()}
    assert (rows["DATE"]["sql_data_type"], rows["DATE"]["datetime_subcode"]) == (9, 1)
    assert (rows["TIMESTAMP"]["sql_data_type"], rows["TIMESTAMP"]["datetime_subcode"]) == (9, 3)
    assert rows["BIGINT"]["sql_data_type"] == -5 and rows["BIGINT"]["datetime_subcode"] is None
    assert rows["DECIMAL"]["create_params"] == ["precision", "scale"]
    assert rows["VARCHAR"]["case_sensitive"] is True


def test_every_reported_type_name_is_accepted_by_create_table():
    conn = connect(_root())
    try:
        names = metadata.xdbc_type_info(None).column("type_name").to_pylist()
        cols = ", ".join(f"c{i} {name}" for i, name in enumerate(names))
        conn.sql(f"CREATE TABLE every_type ({cols})")
        assert conn.open_table("every_type").schema.names == [f"c{i}" for i in range(len(names))]
    finally:
        conn.close()
