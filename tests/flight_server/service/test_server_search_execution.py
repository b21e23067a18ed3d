"""Searches run when a statement runs, not when it is planned: a Flight SQL client's
GetFlightInfo (and a prepare) returns the schema without searching, and DoGet searches
once. Counted with the table layer's own search counter through a real in-process
server, from ADBC and from plain Flight."""

from __future__ import annotations

import warnings
from collections import Counter

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from quiver.proto import flight_sql_pb2, pack
from quiver.supertable import search
from tests.supertable.conftest import docs_schema, make_docs

DIM = 8
VEC = "[" + ", ".join(repr(float(x)) for x in
                      np.random.default_rng(3).standard_normal(DIM).astype(np.float32)) + "]"

STATEMENTS = [
    ("SELECT * FROM bm25_search('docs', 'body', 'rust async', 5)", "bm25"),
    ("SELECT _id, score FROM bm25_search('docs', 'body', 'rust', 5) ORDER BY _id", "bm25"),
    (f"SELECT _id, score FROM vector_search('docs', 'emb', '{VEC}', 4)", "vector"),
    (f"SELECT _id, score FROM hybrid_search('docs', 'body', 'json', 'emb', '{VEC}', 4)",
     "hybrid"),
    ("SELECT _id FROM docs WHERE bm25(body, 'parser') > 0 ORDER BY bm25(body, 'parser') DESC "
     "LIMIT 3", "bm25"),
    (f"SELECT _id FROM docs WHERE knn(emb, '{VEC}', 3) AND year > 2005", "vector"),
    ("SELECT _id FROM docs WHERE knn(emb, (SELECT emb FROM docs WHERE _id = 4), 3)", "vector"),
    ("SELECT count(*) FROM token_match('docs', 'body', 'json')", "token_match"),
]


@pytest.fixture
def docs_server(quiver_server):
    table = quiver_server.conn.create_table("docs", docs_schema(DIM))
    for seed in range(2):
        table.append(make_docs(100, seed, DIM))
        table.commit()
    return quiver_server


def _runs() -> Counter:
    return Counter(search.RUNS)


def _delta(before: Counter) -> dict[str, int]:
    now = _runs()
    return {k: now[k] - before[k] for k in now if now[k] != before[k]}


@pytest.mark.parametrize(("sql", "kind"), STATEMENTS)
def test_get_flight_info_plans_without_searching_and_do_get_searches_once(
        docs_server, sql, kind):
    client = flight.connect(f"grpc://127.0.0.1:{docs_server.port}")
    cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
    before = _runs()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
    assert _delta(before) == {}
    want = docs_server.conn.sql(sql)
    assert info.schema.names == want.schema.names
    before = _runs()
    got = client.do_get(info.endpoints[0].ticket).read_all()
    assert _delta(before).get(kind) == 1
    assert got.to_pylist() == want.to_pylist() and got.num_rows > 0


@pytest.mark.parametrize(("sql", "kind"), STATEMENTS)
def test_adbc_query_searches_once(docs_server, sql, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(f"grpc://127.0.0.1:{docs_server.port}")
    try:
        cur = conn.cursor()
        before = _runs()
        cur.execute(sql)
        got = cur.fetch_arrow_table()
        assert _delta(before).get(kind) == 1
        assert sum(_delta(before).values()) == 1 or kind == "hybrid"
        assert got.num_rows > 0
    finally:
        conn.close()


def test_adbc_prepared_search_with_parameters_searches_once_per_execution(docs_server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn = adbc.connect(f"grpc://127.0.0.1:{docs_server.port}")
    try:
        cur = conn.cursor()
        sql = "SELECT _id, score FROM bm25_search('docs', 'body', ?, ?)"
        for query in ("rust", "json parser"):
            before = _runs()
            cur.execute(sql, parameters=(query, 3))
            got = cur.fetch_arrow_table()
            assert _delta(before) == {"bm25": 1}
            assert got.to_pylist() == docs_server.conn.sql(
                f"SELECT _id, score FROM bm25_search('docs', 'body', '{query}', 3)").to_pylist()
    finally:
        conn.close()


def test_schema_requests_still_refuse_bad_search_arguments(docs_server):
    client = flight.connect(f"grpc://127.0.0.1:{docs_server.port}")
    before = _runs()
    for sql, message in (
            ("SELECT * FROM bm25_search('docs', 'nope', 'rust', 5)", "no column 'nope'"),
            ("SELECT * FROM bm25_search('docs', 'body', '...', 5)", "no searchable token"),
            ("SELECT _id FROM docs WHERE bm25(body, '...') > 0", "no searchable token"),
            ("SELECT _id FROM docs WHERE knn(emb, '[1.0, 2.0]', 3)", "has 2 values")):
        cmd = pack(flight_sql_pb2.CommandStatementQuery(query=sql))
        with pytest.raises(pa.ArrowInvalid, match=message):
            client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
    assert _delta(before) == {}
