"""Vector columns sent as float16 or float64 (ADBC bulk ingest, SQL CREATE TABLE) are
indexed and stored as float32, and find what float32 finds; a type that cannot be a vector
is refused as INVALID_ARGUMENT."""

from __future__ import annotations

import warnings

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pytest
from adbc_driver_manager import AdbcStatusCode

DIM = 8


@pytest.fixture
def db(flight_uri: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(flight_uri)
    try:
        yield conn
    finally:
        conn.close()


def _vectors(n: int = 300, seed: int = 5) -> np.ndarray:
    # Values a float16 holds exactly, so every width sends the same numbers.
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float16)


def _table(x: np.ndarray, value_type: pa.DataType) -> pa.Table:
    flat = pa.array(x.reshape(-1).astype(value_type.to_pandas_dtype()), value_type)
    return pa.table({"k": np.arange(len(x), dtype=np.int64),
                     "v": pa.FixedSizeListArray.from_arrays(flat, DIM)})


def _nearest(db, table: str, q: np.ndarray) -> list[tuple[int, float]]:
    cur = db.cursor()
    literal = "[" + ", ".join(repr(float(c)) for c in q) + "]"
    cur.execute(f"SELECT k, score FROM vector_search('{table}', 'v', '{literal}', 10) "
                "ORDER BY score, k")
    return [(int(k), float(s)) for k, s in cur.fetchall()]


@pytest.mark.parametrize("value_type", [pa.float16(), pa.float64()], ids=str)
def test_bulk_ingested_float16_and_float64_vectors_are_indexed_like_float32(
        db, quiver_server, value_type) -> None:
    x = _vectors()
    cur = db.cursor()
    cur.adbc_ingest("ref32", _table(x, pa.float32()), mode="create")
    cur.adbc_ingest("wide", _table(x, value_type), mode="create")
    table = quiver_server.conn.open_table("wide")
    assert dict(table.spec.vector) == {"v": "cosine"}
    assert table.schema.field("v").type == pa.list_(pa.float32(), DIM)
    q = x[11].astype(np.float32) + 0.02
    got, expected = _nearest(db, "wide", q), _nearest(db, "ref32", q)
    assert [k for k, _ in got] == [k for k, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-6)
    # An append in another width is cast to the stored float32 too.
    cur.adbc_ingest("wide", _table(x[:5], value_type), mode="append")
    cur.execute("SELECT count(*) FROM wide")
    assert cur.fetchone()[0] == len(x) + 5


@pytest.mark.parametrize("sql_type", ["DOUBLE[8]", "HALFFLOAT[8]"])
def test_sql_create_of_a_double_or_half_vector_indexes_it_as_float32(db, quiver_server,
                                                                     sql_type) -> None:
    x = _vectors(40)
    cur = db.cursor()
    cur.execute(f"CREATE TABLE w (k BIGINT, v {sql_type})")
    cur.execute("CREATE TABLE ref32 (k BIGINT, v FLOAT[8])")
    for name in ("w", "ref32"):
        rows = ", ".join(f"({i}, [{', '.join(repr(float(c)) for c in row)}])"
                         for i, row in enumerate(x))
        cur.execute(f"INSERT INTO {name} VALUES {rows}")
    assert quiver_server.conn.open_table("w").schema.field("v").type == \
        pa.list_(pa.float32(), DIM)
    q = x[3].astype(np.float32)
    assert [k for k, _ in _nearest(db, "w", q)] == [k for k, _ in _nearest(db, "ref32", q)]
    cur.execute("DESCRIBE w")
    assert "FLOAT[8]" in str(cur.fetch_arrow_table().to_pylist())


@pytest.mark.parametrize("sql_type", ["TINYINT[8]", "VARCHAR", "FLOAT[]"])
def test_sql_create_with_a_vector_index_on_a_non_vector_type_is_invalid_argument(
        db, quiver_server, sql_type) -> None:
    cur = db.cursor()
    with pytest.raises(adbc.Error, match="fixed-size list of float16, float32 or float64") \
            as err:
        cur.execute(f"CREATE TABLE bad (k BIGINT, v {sql_type}) WITH (vector = 'v')")
    assert err.value.status_code == AdbcStatusCode.INVALID_ARGUMENT
    assert "bad" not in quiver_server.conn.list_tables()
