"""Metadata command results carry exactly the schemas the Flight SQL specification gives.

The expected schemas are written here from the specification's comments in
FlightSql.proto (cross-checked with its reference implementations), independently of
``quiver.flight_server.service.metadata``.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from quiver.flight_server.service import metadata
from quiver.flight_server.sql import connect


def _root() -> str:
    """A fresh in-memory root (memory roots are shared by name within the process)."""
    return f"memory://metadata-{uuid.uuid4().hex}"

S = pa.string()


def f(name: str, t: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, t, nullable=nullable)


TABLES = [f("catalog_name", S), f("db_schema_name", S), f("table_name", S, False),
          f("table_type", S, False)]
KEYS = pa.schema([
    f("pk_catalog_name", S), f("pk_db_schema_name", S), f("pk_table_name", S, False),
    f("pk_column_name", S, False), f("fk_catalog_name", S), f("fk_db_schema_name", S),
    f("fk_table_name", S, False), f("fk_column_name", S, False),
    f("key_sequence", pa.int32(), False), f("fk_key_name", S), f("pk_key_name", S),
    f("update_rule", pa.uint8(), False), f("delete_rule", pa.uint8(), False)])
SQL_INFO_VALUE = pa.dense_union([
    f("string_value", S, False),
    f("bool_value", pa.bool_(), False),
    f("bigint_value", pa.int64(), False),
    f("int32_bitmask", pa.int32(), False),
    f("string_list", pa.list_(S), False),
    f("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), False),
], type_codes=[0, 1, 2, 3, 4, 5])
i32 = pa.int32()
EXPECTED = {
    "CommandGetCatalogs": pa.schema([f("catalog_name", S, False)]),
    "CommandGetDbSchemas": pa.schema([f("catalog_name", S), f("db_schema_name", S, False)]),
    "CommandGetTables": pa.schema(TABLES),
    "CommandGetTablesWithSchema": pa.schema([*TABLES, f("table_schema", pa.binary(), False)]),
    "CommandGetTableTypes": pa.schema([f("table_type", S, False)]),
    "CommandGetSqlInfo": pa.schema([f("info_name", pa.uint32(), False),
                                    f("value", SQL_INFO_VALUE, False)]),
    "CommandGetXdbcTypeInfo": pa.schema([
        f("type_name", S, False), f("data_type", i32, False), f("column_size", i32),
        f("literal_prefix", S), f("literal_suffix", S),
        f("create_params", pa.list_(f("item", S, False))), f("nullable", i32, False),
        f("case_sensitive", pa.bool_(), False), f("searchable", i32, False),
        f("unsigned_attribute", pa.bool_()), f("fixed_prec_scale", pa.bool_(), False),
        f("auto_increment", pa.bool_()), f("local_type_name", S), f("minimum_scale", i32),
        f("maximum_scale", i32), f("sql_data_type", i32, False), f("datetime_subcode", i32),
        f("num_prec_radix", i32), f("interval_precision", i32)]),
    "CommandGetPrimaryKeys": pa.schema([
        f("catalog_name", S), f("db_schema_name", S), f("table_name", S, False),
        f("column_name", S, False), f("key_sequence", i32, False), f("key_name", S)]),
    "CommandGetImportedKeys": KEYS,
    "CommandGetExportedKeys": KEYS,
    "CommandGetCrossReference": KEYS,
}


def _ipc_roundtrip(schema: pa.Schema) -> pa.Schema:
    return pa.ipc.read_schema(schema.serialize())


@pytest.fixture(scope="module")
def conn():
    c = connect(_root())
    c.sql("CREATE TABLE docs (id BIGINT, title VARCHAR)")
    yield c
    c.close()


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_declared_schema_equals_the_specification_schema(command):
    assert metadata.SCHEMAS[command].equals(EXPECTED[command], check_metadata=True), (
        f"{command}: {metadata.SCHEMAS[command]} != {EXPECTED[command]}")


def test_schemas_name_exactly_the_metadata_commands():
    assert set(metadata.SCHEMAS) == set(EXPECTED)


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_declared_schema_survives_ipc_serialization_unchanged(command):
    assert _ipc_roundtrip(metadata.SCHEMAS[command]).equals(EXPECTED[command])


def _results(conn) -> dict[str, pa.Table]:
    return {
        "CommandGetCatalogs": metadata.catalogs(conn),
        "CommandGetDbSchemas": metadata.db_schemas(conn, None, None),
        "CommandGetTables": metadata.tables(conn, None, None, None, [], False),
        "CommandGetTablesWithSchema": metadata.tables(conn, None, None, None, [], True),
        "CommandGetTableTypes": metadata.table_types(),
        "CommandGetSqlInfo": metadata.sql_info([]),
        "CommandGetXdbcTypeInfo": metadata.xdbc_type_info(None),
        "CommandGetPrimaryKeys": metadata.primary_keys(conn, None, None, "docs"),
        "CommandGetImportedKeys": metadata.imported_keys(conn, None, None, "docs"),
        "CommandGetExportedKeys": metadata.exported_keys(conn, None, None, "docs"),
        "CommandGetCrossReference": metadata.cross_reference(
            conn, None, None, "docs", None, None, "docs"),
    }


def test_every_result_has_its_specification_schema_and_valid_data(conn):
    for command, table in _results(conn).items():
        assert table.schema.equals(EXPECTED[command]), command
        table.validate(full=True)


def test_results_stream_through_ipc_unchanged(conn):
    for command, table in _results(conn).items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        back = pa.ipc.open_stream(sink.getvalue()).read_all()
        assert back.schema.equals(EXPECTED[command]), command
        assert back.equals(table), command


def test_sql_info_union_type_codes_follow_the_member_order():
    value = metadata.SCHEMAS["CommandGetSqlInfo"].field("value").type
    assert value.mode == "dense"
    assert [value.field(i).name for i in range(value.num_fields)] == [
        "string_value", "bool_value", "bigint_value", "int32_bitmask", "string_list",
        "int32_to_int32_list_map"]
    assert list(value.type_codes) == [0, 1, 2, 3, 4, 5]


def test_sql_info_map_names_its_key_and_value_as_the_specification_does():
    value = metadata.SCHEMAS["CommandGetSqlInfo"].field("value").type
    m = value.field(5).type
    assert isinstance(m, pa.MapType)
    assert m.key_field.name == "key" and not m.key_field.nullable
    assert m.item_field.name == "value"
    assert m.key_type == pa.int32() and m.item_type == pa.list_(pa.int32())


def test_key_commands_answer_no_rows(conn):
    results = _results(conn)
    for command in ("CommandGetPrimaryKeys", "CommandGetImportedKeys",
                    "CommandGetExportedKeys", "CommandGetCrossReference"):
        assert results[command].num_rows == 0, command


def test_catalogs_and_table_types_name_the_one_catalog_and_type(conn):
    assert metadata.catalogs(conn).column("catalog_name").to_pylist() == [metadata.CATALOG]
    assert metadata.table_types().column("table_type").to_pylist() == ["TABLE"]
