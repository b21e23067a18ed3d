"""A bounded load test: 16 ADBC clients at once against one ``quiver serve`` process,
mixing searches, aggregates and appends; every answer is checked afterwards."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import numpy as np
import pyarrow as pa

from quiver.flight_server.sql import connect
from tests.flight_server.conftest import start_server

CLIENTS = 16
REQUESTS = 12
TIME_BOUND_S = 40.0
DOCS = 400
DIM = 8
APPEND_ROWS = 3
INITIAL_EVENTS = 50
KINDS = ("bm25", "append_sql", "vector", "aggregate", "append_ingest", "count")
WORDS = [f"w{i}" for i in range(60)]
QUERIES = ["w1 w7", "w3", "w10 w20 w30", "w42 w5", "w59"]
AGGREGATE = "SELECT tag, count(*) AS n, sum(id) AS s FROM docs GROUP BY tag ORDER BY tag"


def _docs(rng: np.random.Generator) -> pa.Table:
    body = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(DOCS)]
    emb = rng.standard_normal((DOCS, DIM)).astype(np.float32)
    return pa.table({
        "id": pa.array(np.arange(DOCS, dtype=np.int64)),
        "tag": pa.array([f"t{i % 7}" for i in range(DOCS)]),
        "body": pa.array(body),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM),
    })


def _vectors(rng: np.random.Generator) -> list[str]:
    return ["[" + ", ".join(f"{x:.4f}" for x in rng.standard_normal(DIM)) + "]"
            for _ in range(4)]


def _search_sql(kind: str, i: int, vectors: list[str]) -> str:
    if kind == "bm25":
        q = QUERIES[i % len(QUERIES)]
        return f"SELECT _id, score, id FROM bm25_search('docs', 'body', '{q}', 5)"
    v = vectors[i % len(vectors)]
    return f"SELECT _id, score, id FROM vector_search('docs', 'emb', '{v}', 5)"


def _event_ids(client: int, request: int) -> list[int]:
    base = 1_000_000 + (client * REQUESTS + request) * APPEND_ROWS
    return list(range(base, base + APPEND_ROWS))


@dataclass
class Outcome:
    """What one request asked and what came back."""

    client: int
    request: int
    kind: str
    sql: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    count: int | None = None
    error: str | None = None


def _one(cur: Any, client: int, request: int, vectors: list[str]) -> Outcome:
    kind = KINDS[(client + request) % len(KINDS)]
    out = Outcome(client, request, kind)
    if kind in ("bm25", "vector"):
        out.sql = _search_sql(kind, client + request, vectors)
        cur.execute(out.sql)
        out.rows = cur.fetch_arrow_table().to_pylist()
    elif kind == "aggregate":
        out.sql = AGGREGATE
        cur.execute(out.sql)
        out.rows = cur.fetch_arrow_table().to_pylist()
    elif kind == "count":
        cur.execute("SELECT count(*) AS n FROM events")
        out.count = cur.fetch_arrow_table().column("n")[0].as_py()
    else:
        ids = _event_ids(client, request)
        if kind == "append_sql":
            values = ", ".join(f"({i}, 'c{client}')" for i in ids)
            cur.execute(f"INSERT INTO events VALUES {values}")
            out.count = cur.rowcount
        else:
            data = pa.table({"eid": pa.array(ids, pa.int64()),
                             "who": pa.array([f"c{client}"] * len(ids))})
            out.count = cur.adbc_ingest("events", data, mode="append")
    return out


def _client(uri: str, client: int, vectors: list[str], deadline: float,
            outcomes: list[Outcome]) -> None:
    try:
        with adbc.connect(uri, autocommit=True) as db, db.cursor() as cur:
            for request in range(REQUESTS):
                if time.monotonic() > deadline:
                    return
                try:
                    outcomes.append(_one(cur, client, request, vectors))
                except Exception as exc:  # every failure is reported by the checks below
                    outcomes.append(Outcome(client, request, "error", error=repr(exc)))
    except Exception as exc:
        outcomes.append(Outcome(client, -1, "error", error=repr(exc)))


def test_sixteen_clients_mixing_searches_aggregates_and_appends_all_get_right_answers(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    rng = np.random.default_rng(7)
    vectors = _vectors(rng)
    with connect(str(root)) as setup:
        setup.create_table("docs", _docs(rng).schema, fts=["body"], vector={"emb": "cosine"})
        setup.open_table("docs").append(_docs(np.random.default_rng(11)))
        setup.create_table("events", pa.schema([("eid", pa.int64()), ("who", pa.string())]))
        setup.open_table("events").append(pa.table({
            "eid": pa.array(range(INITIAL_EVENTS), pa.int64()),
            "who": pa.array(["seed"] * INITIAL_EVENTS)}))
        # The answers the engine gives in this process over the same (unchanging) docs.
        expected = {sql: setup.sql(sql).to_pylist()
                    for sql in {_search_sql(k, i, vectors) for k in ("bm25", "vector")
                                for i in range(CLIENTS + REQUESTS)} | {AGGREGATE}}
    assert all(len(rows) == (7 if sql == AGGREGATE else 5) for sql, rows in expected.items())

    server = start_server(root)
    try:
        outcomes: list[Outcome] = []
        started = time.monotonic()
        deadline = started + TIME_BOUND_S
        threads = [threading.Thread(target=_client, args=(server.uri, c, vectors, deadline,
                                                          outcomes), daemon=True)
                   for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline + 5.0 - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "clients still running at the bound"
        elapsed = time.monotonic() - started

        errors = [o for o in outcomes if o.error is not None]
        assert errors == []
        assert len(outcomes) == CLIENTS * REQUESTS, f"only {len(outcomes)} in {elapsed:.1f}s"
        appended = [o for o in outcomes if o.kind.startswith("append")]
        assert all(o.count == APPEND_ROWS for o in appended)
        for o in outcomes:
            if o.sql:
                assert o.rows == expected[o.sql], (o.kind, o.sql)
            if o.kind == "count":
                assert INITIAL_EVENTS <= o.count <= INITIAL_EVENTS + APPEND_ROWS * len(appended)

        with adbc.connect(server.uri, autocommit=True) as db, db.cursor() as cur:
            cur.execute("SELECT eid FROM events")
            eids = sorted(cur.fetch_arrow_table().column("eid").to_pylist())
        wanted = sorted(list(range(INITIAL_EVENTS))
                        + [i for o in appended for i in _event_ids(o.client, o.request)])
        assert len(eids) == INITIAL_EVENTS + APPEND_ROWS * len(appended)
        assert eids == wanted
    finally:
        server.stop()
