"""The SQL benchmark: Quiver SQL against infino's SQL, DuckDB and DataFusion, one run.

Run ``PYTHONPATH=. python -m bench.sql_bench`` (``--quick`` for a smaller run).
The PyPI summaries (name, version, month, summary) go into a Quiver table and an
infino table on local disk by 16 appends of equal slices, with BM25 indexes on
``summary`` and ``name``; the 100K MiniLM corpus (row, name, summary, embedding)
goes into a second table of each engine with BM25 on ``summary`` and a cosine
vector index. The same summaries are also written once as plain Parquet, which
DuckDB (``read_parquet``) and a bare DataFusion context read as references.

Every statement runs in this process through each engine's own SQL entry point
(Quiver: ``SqlEngine(catalog.connect(root)).execute``, infino:
``Connection.query_sql``, DuckDB: ``execute(...).to_arrow_table()``, DataFusion:
``SessionContext.sql(...).to_arrow_table()``), each result collected as Arrow.
Latency is the median of up to 15 timed runs after two warm-up runs, engines
taking turns statement by statement. Results go to ``bench/results/``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench import infino_engine, report, sql_remote
from bench.data import MINILM, SUMMARIES
from bench.infino_engine import InfinoTables
from bench.machine import describe_machine
from bench.report import fmt as _fmt
from bench.table_bench import bounded_p50

log = logging.getLogger("bench.sql")

REPO = Path(__file__).resolve().parent.parent

K = 10
COMMITS = 16
SUMMARIES_TABLE = "summaries"
VECTOR_TABLE = "minilm"
# The superfile writer's row group size, so the plain Parquet copy has the same grain.
PLAIN_ROW_GROUP = 65536
ENGINES = ("quiver", "quiver_parquet", "infino", "duckdb", "datafusion")
BM25_TEXT = "fast json parser"
# Selective equalities: (column, value). Names are unique and the data is sorted by name,
# so min/max statistics already prune the name scan; the summary value (4 rows) is not.
EQUALITIES = (("name", "requests"),
              ("summary", "Recursive nesting of inline forms for Django Admin"))
# The quick run's first 100K rows hold neither of those: values they do hold (the summary
# is that of 5 rows).
QUICK_EQUALITIES = (("name", "boto3"), ("summary", "A CLI to work with DataHub metadata"))
# Scans also measured on an S3 root, reading the objects and their disk-cache copies.
REMOTE_SCANS = ("GROUP BY month", "LIKE '%json%' count")
# Ratio limits of the targets.
SCAN_LIMIT = 1.5
SEARCH_LIMIT = 2.0
INDEX_SPEEDUP = 5.0


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"summary_rows": 100_000, "vector_rows": 20_000, "runs": 5, "warmup": 1,
                "budget_s": 4.0, "vector_queries": 5, "equalities": QUICK_EQUALITIES}
    return {"summary_rows": None, "vector_rows": None, "runs": 15, "warmup": 2,
            "budget_s": 12.0, "vector_queries": 15, "equalities": EQUALITIES}


# -- statements -------------------------------------------------------------------------------

@dataclass
class Case:
    """One statement measured on the engines that can run it.

    ``sql`` maps an engine to its statement texts (several texts are run in turn,
    one per timed call, e.g. one per query vector); ``kind`` says which target the
    case counts towards: "scan" (against DuckDB), "search" (against infino) or
    "index" (Quiver's index path against its scan path)."""

    name: str
    kind: str
    sql: dict[str, list[str]]
    note: str = ""
    check: str = "rows"  # how results are compared: "rows" (equal), "overlap" (top-k ids)
    key: str | None = None  # the column compared for "overlap"
    results: dict[str, Any] = field(default_factory=dict)


def _vector_text(v: np.ndarray) -> str:
    # Comma-separated, no brackets: the form both engines' search functions accept.
    return ",".join(f"{x:.8g}" for x in v.tolist())


def _eq_name(col: str, value: str, how: str) -> str:
    short = value if len(value) <= 20 else value[:17] + "..."
    return f"{col} = '{short}' ({how})"


def scan_cases(equalities: tuple[tuple[str, str], ...] = EQUALITIES) -> list[Case]:
    t = SUMMARIES_TABLE
    every = ENGINES
    texts = {
        "count(*)": f"SELECT count(*) AS n FROM {t}",
        "GROUP BY month": (f"SELECT month, count(*) AS n FROM {t} GROUP BY month "
                           "ORDER BY month"),
        "LIKE '%json%' count": f"SELECT count(*) AS n FROM {t} WHERE summary LIKE '%json%'",
    }
    for col, value in equalities:
        texts[_eq_name(col, value, "WHERE")] = (
            f"SELECT name, version, month, summary FROM {t} WHERE {col} = '{value}'")
    cases = [Case(name, "scan", {e: [sql] for e in every}) for name, sql in texts.items()]
    # The same equality as a closed range: no index rewrite applies to it, while min/max
    # and page pruning still do, so it is Quiver's plain scan path (over Parquet: the
    # engine without the in-memory rows).
    cases += [Case(_eq_name(col, value, "scan path"), "scanpath", {"quiver_parquet": [
        f"SELECT name, version, month, summary FROM {t} "
        f"WHERE {col} >= '{value}' AND {col} <= '{value}'"]},
        note="the equality written as a closed range, which no index rewrite touches")
        for col, value in equalities]
    # The same equality with AND TRUE: the point lookup does not take it, the index
    # rewrite does, and DataFusion plans and runs the rest (the path before point lookups).
    cases += [Case(_eq_name(col, value, "via DataFusion"), "indexplan", {"quiver_parquet": [
        f"SELECT name, version, month, summary FROM {t} WHERE {col} = '{value}' AND TRUE"]},
        note="the equality with AND TRUE, which the point lookup leaves to the index "
             "rewrite and DataFusion")
        for col, value in equalities]
    return cases


def search_cases(vectors: np.ndarray, texts: list[str], rewrite: bool,
                 equalities: tuple[tuple[str, str], ...] = EQUALITIES) -> list[Case]:
    t, v = SUMMARIES_TABLE, VECTOR_TABLE
    both = ("quiver", "infino")
    bm25 = f"SELECT * FROM bm25_search('{t}', 'summary', '{BM25_TEXT}', {K})"
    vec = [f"SELECT * FROM vector_search('{v}', 'embedding', '{_vector_text(q)}', {K})"
           for q in vectors]
    hyb = [f"SELECT * FROM hybrid_search('{v}', 'summary', '{s.replace(chr(39), chr(39) * 2)}', "
           f"'embedding', '{_vector_text(q)}', {K})" for q, s in zip(vectors, texts, strict=True)]
    cases = [
        Case(_eq_name(col, value, "exact_match"), "index", {e: [
            f"SELECT name, version, month, summary FROM exact_match('{t}', '{col}', '{value}')"]
            for e in ("quiver_parquet", "infino")},
            note=f"the index path: exact_match over the BM25 index of {col}")
        for col, value in equalities
    ]
    cases += [
        Case(f"bm25_search top-{K}", "search", {e: [bm25] for e in both},
             check="overlap", key="name"),
        Case(f"vector_search top-{K}", "search", {e: vec for e in both},
             note=f"{len(vec)} query vectors in turn", check="overlap", key="row"),
        Case(f"hybrid_search top-{K}", "search", {e: hyb for e in both},
             note=f"{len(hyb)} (text, vector) queries in turn", check="overlap", key="row"),
    ]
    where = (f"SELECT name, summary, bm25(summary, '{BM25_TEXT}') AS s FROM {t} "
             f"WHERE bm25(summary, '{BM25_TEXT}') > 0 ORDER BY s DESC LIMIT {K}")
    # infino's SQL has no bm25() scalar; its nearest statement is the table function.
    same = (f"SELECT name, summary, score AS s FROM bm25_search('{t}', 'summary', "
            f"'{BM25_TEXT}', {K}) ORDER BY s DESC")
    cases.append(Case(f"bm25() in WHERE top-{K}", "search",
                      {"quiver": [where], "infino": [same]} if rewrite else {},
                      note="infino: bm25_search, it has no bm25() in WHERE" if rewrite else
                      "n/a: flight_server/sql/rewrite.py does not exist at this commit",
                      check="overlap", key="name"))
    return cases


# -- engines ----------------------------------------------------------------------------------

class Engines:
    """The four SQL engines over the same data, each behind ``run(engine, sql)``."""

    def __init__(self, base: Path, summaries: pa.Table, vectors: pa.Table) -> None:
        import datafusion
        import duckdb

        from quiver import catalog
        from quiver.flight_server.sql import SqlEngine

        self.base = base
        self.build: dict[str, Any] = {}
        (base / "quiver").mkdir()
        (base / "infino").mkdir()
        (base / "infino-cache").mkdir()

        qconn = catalog.connect(str(base / "quiver"))
        self.build["quiver"] = {
            SUMMARIES_TABLE: _ingest(lambda: qconn.create_table(
                SUMMARIES_TABLE, summaries.schema, fts=["summary", "name"]),
                lambda tbl, part: tbl.append(part), summaries),
            VECTOR_TABLE: _ingest(lambda: qconn.create_table(
                VECTOR_TABLE, vectors.schema, fts=["summary"], vector={"embedding": "cosine"}),
                lambda tbl, part: tbl.append(part), vectors),
        }
        self.quiver_conn = qconn
        self.quiver = SqlEngine(qconn)
        self.quiver_parquet = SqlEngine(qconn, memory_cache_bytes=0)
        # The first scan of each table decodes its rows into memory in the background;
        # the measured runs read them from there, as a server's repeated queries do.
        t0 = time.perf_counter()
        for name in (SUMMARIES_TABLE, VECTOR_TABLE):
            self.quiver.execute(f"SELECT count(*) FROM {name} WHERE _id >= 0")
        self.quiver.decoded.wait()
        self.build["quiver_memory"] = {"seconds": time.perf_counter() - t0,
                                       "bytes": self.quiver.decoded.nbytes}

        import infino

        self._inf = InfinoTables(str(base / "infino"), cache_base=str(base / "infino-cache"))
        iconn = self._inf.connect()
        dim = vectors.schema.field("embedding").type.list_size
        self.build["infino"] = {
            SUMMARIES_TABLE: _ingest(lambda: iconn.create_table(
                SUMMARIES_TABLE, InfinoTables.conform_schema(summaries.schema),
                infino.IndexSpec().fts("summary").fts("name")),
                self._inf.append, summaries),
            VECTOR_TABLE: _ingest(lambda: iconn.create_table(
                VECTOR_TABLE, InfinoTables.conform_schema(vectors.schema),
                infino.IndexSpec().fts("summary").vector("embedding", dim, "cosine")),
                self._inf.append, vectors),
        }
        self.infino = iconn

        self.plain = base / "plain" / "summaries.parquet"
        self.plain.parent.mkdir()
        t0 = time.perf_counter()
        pq.write_table(summaries, self.plain, row_group_size=PLAIN_ROW_GROUP)
        meta = pq.ParquetFile(self.plain).metadata
        self.build["plain_parquet"] = {"seconds": time.perf_counter() - t0,
                                       "rows": meta.num_rows, "row_groups": meta.num_row_groups,
                                       "bytes": self.plain.stat().st_size}
        self.duck = duckdb.connect()
        self.duck.execute(f"CREATE VIEW {SUMMARIES_TABLE} AS "
                          f"SELECT * FROM read_parquet('{self.plain}')")
        self.df = datafusion.SessionContext()
        self.df.register_parquet(SUMMARIES_TABLE, str(self.plain))

    def run(self, engine: str, sql: str) -> pa.Table:
        if engine == "quiver":
            return self.quiver.execute(sql)
        if engine == "quiver_parquet":
            return self.quiver_parquet.execute(sql)
        if engine == "infino":
            return self.infino.query_sql(sql)
        if engine == "duckdb":
            return self.duck.sql(sql).to_arrow_table()
        return self.df.sql(sql).to_arrow_table()

    def quiver_path(self, engine: str, sql: str) -> list[str]:
        """What Quiver's index rewrite decided for ``sql`` (its EXPLAIN notes)."""
        plan = self.run(engine, f"EXPLAIN {sql}")
        kinds = plan.column("plan_type").to_pylist()
        return [p for k, p in zip(kinds, plan.column("plan").to_pylist(), strict=True)
                if k == "quiver_index_path"]

    def quiver_superfiles(self) -> dict[str, int]:
        return {n: sum(1 for f in self.quiver_conn.open_table(n).snapshot().files
                       if f.live_rows > 0) for n in (SUMMARIES_TABLE, VECTOR_TABLE)}

    def infino_superfiles(self) -> dict[str, int]:
        top = self.base / "infino"
        return {n: sum(1 for p in top.rglob("*.sf.parquet")
                       if p.relative_to(top).parts[0].startswith(f"{n}-"))
                for n in (SUMMARIES_TABLE, VECTOR_TABLE)}

    def close(self) -> None:
        self.duck.close()
        self.quiver.close()
        self.quiver_parquet.close()
        self.quiver_conn.close()


def _ingest(create: Callable[[], Any], append: Callable[[Any, pa.Table], None],
            data: pa.Table) -> dict[str, Any]:
    table = create()
    bounds = np.linspace(0, data.num_rows, COMMITS + 1).round().astype(np.int64)
    t0 = time.perf_counter()
    for a, b in itertools.pairwise(bounds):
        append(table, data.slice(int(a), int(b - a)))
    seconds = time.perf_counter() - t0
    return {"rows": data.num_rows, "commits": COMMITS, "seconds": seconds,
            "rows_per_s": data.num_rows / seconds}


# -- data -------------------------------------------------------------------------------------

def load_data(cfg: dict[str, Any]) -> tuple[pa.Table, pa.Table, np.ndarray, list[str]]:
    summaries = pq.read_table(SUMMARIES).combine_chunks()
    if cfg["summary_rows"] is not None:
        summaries = summaries.slice(0, cfg["summary_rows"])
    corpus = pq.read_table(MINILM / "corpus.parquet").combine_chunks()
    emb = np.load(MINILM / "embeddings.f16.npy").astype(np.float32)
    n = len(emb) if cfg["vector_rows"] is None else cfg["vector_rows"]
    d = emb.shape[1]
    vectors = pa.table({
        "row": pc.cast(corpus.column("row").slice(0, n), pa.int64()),
        "name": corpus.column("name").slice(0, n),
        "summary": corpus.column("summary").slice(0, n),
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(emb[:n]).reshape(-1), pa.float32()), d),
    })
    queries = np.load(MINILM / "query_embeddings.f32.npy").astype(np.float32)
    texts = pq.read_table(MINILM / "queries.parquet").column("text").to_pylist()
    q = cfg["vector_queries"]
    return summaries, vectors, queries[:q], texts[:q]


# -- measuring --------------------------------------------------------------------------------

def _cycle(engines: Engines, engine: str, texts: list[str]) -> Callable[[], pa.Table]:
    it = itertools.cycle(texts)
    return lambda: engines.run(engine, next(it))


def _canonical(t: pa.Table) -> list[tuple[Any, ...]]:
    # Engines differ in string kinds (large/view) and column names of count(*).
    cols = [c.cast(pa.large_string()) if pa.types.is_string(c.type)
            or pa.types.is_string_view(c.type) else c for c in t.columns]
    rows = list(zip(*(c.to_pylist() for c in cols), strict=True))
    return sorted(rows, key=repr)


def _compare(case: Case, engines: Engines) -> dict[str, Any]:
    """Whether the engines' answers agree (exact rows, or top-k overlap with Quiver)."""
    out: dict[str, Any] = {}
    first = {e: engines.run(e, texts[0]) for e, texts in case.sql.items()}
    if case.check == "rows":
        ref = _canonical(next(iter(first.values())))
        out["rows"] = {e: t.num_rows for e, t in first.items()}
        out["agree"] = all(_canonical(t) == ref for t in first.values())
        return out
    keys = {e: set(t.column(case.key).to_pylist()) for e, t in first.items()}
    out["rows"] = {e: len(v) for e, v in keys.items()}
    if "quiver" in keys and "infino" in keys:
        out["overlap_with_infino"] = len(keys["quiver"] & keys["infino"])
    return out


def measure(engines: Engines, cases: list[Case], cfg: dict[str, Any]) -> None:
    for case in cases:
        if not case.sql:
            log.info("%-32s n/a (%s)", case.name, case.note)
            continue
        case.results["check"] = _compare(case, engines)
        for eng in ("quiver", "quiver_parquet"):
            if eng in case.sql:
                case.results["quiver_path"] = engines.quiver_path(eng, case.sql[eng][0])
                break
        for eng in ENGINES:
            texts = case.sql.get(eng)
            if not texts:
                continue
            m = bounded_p50(_cycle(engines, eng, texts), cfg["runs"], cfg["warmup"],
                            cfg["budget_s"])
            case.results[eng] = m
        log.info("%-32s %s  %s", case.name, "  ".join(
            f"{e} {case.results[e]['p50_ms']:.2f} ms" for e in ENGINES if e in case.results),
            case.results["check"])


def _p50(case: Case, engine: str) -> float | None:
    r = case.results.get(engine)
    return None if r is None else r["p50_ms"]


def evaluate_targets(cases: list[Case], equalities: tuple[tuple[str, str], ...] = EQUALITIES
                     ) -> list[dict[str, Any]]:
    out = []
    by_name = {c.name: c for c in cases}
    for c in cases:
        q = _p50(c, "quiver") or (_p50(c, "quiver_parquet") if c.kind == "search" else None)
        if q is None:
            continue
        if c.kind == "scan" and _p50(c, "duckdb"):
            ratio = q / _p50(c, "duckdb")
            out.append({"name": f"{c.name}: Quiver <= {SCAN_LIMIT}x DuckDB", "value": ratio,
                        "limit": SCAN_LIMIT, "pass": ratio <= SCAN_LIMIT})
            if _p50(c, "quiver_parquet"):
                ratio = _p50(c, "quiver_parquet") / _p50(c, "duckdb")
                out.append({"name": f"{c.name}: Quiver reading Parquet <= {SCAN_LIMIT}x "
                            "DuckDB (no rows in memory)", "value": ratio,
                            "limit": SCAN_LIMIT, "pass": ratio <= SCAN_LIMIT})
        if c.kind == "search" and _p50(c, "infino"):
            ratio = q / _p50(c, "infino")
            out.append({"name": f"{c.name}: Quiver <= {SEARCH_LIMIT}x infino", "value": ratio,
                        "limit": SEARCH_LIMIT, "pass": ratio <= SEARCH_LIMIT})
    for (col, value), how in itertools.product(equalities, ("WHERE", "exact_match")):
        scan = by_name.get(_eq_name(col, value, "scan path"))
        index = by_name.get(_eq_name(col, value, how))
        if not (scan and index and _p50(scan, "quiver_parquet")
                and _p50(index, "quiver_parquet")):
            continue
        speedup = _p50(scan, "quiver_parquet") / _p50(index, "quiver_parquet")
        out.append({"name": f"{_eq_name(col, value, how)}: Quiver >= {INDEX_SPEEDUP}x faster "
                    "than its scan path (speedup)", "value": speedup,
                    "limit": INDEX_SPEEDUP, "pass": speedup >= INDEX_SPEEDUP})
    return out


def equality_paths(cases: list[Case], equalities: tuple[tuple[str, str], ...]
                   ) -> list[dict[str, Any]]:
    """Per equality, the p50 of each of Quiver's paths on the Parquet-only engine (the
    point lookup, the index rewrite through DataFusion, exact_match, the scan) and each
    one's speedup over the scan."""
    by_name = {c.name: c for c in cases}
    out = []
    for col, value in equalities:
        paths = {how: _p50(by_name[_eq_name(col, value, how)], "quiver_parquet")
                 for how in ("WHERE", "via DataFusion", "exact_match", "scan path")
                 if _eq_name(col, value, how) in by_name}
        scan = paths.get("scan path")
        out.append({"column": col, "value": value, "p50_ms": paths,
                    "speedup_over_scan": {how: scan / ms for how, ms in paths.items()
                                          if scan and ms and how != "scan path"}})
    return out


# -- running ----------------------------------------------------------------------------------

def run(quick: bool, quiet: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = _config(quick)
    started = dt.datetime.now(dt.UTC)
    machine = describe_machine(REPO)
    infino_cfg = infino_engine.configure(infino_engine.DEFAULT_TARGET_RECALL, split_mb=None)
    rewrite = importlib.util.find_spec("quiver.flight_server.sql.rewrite") is not None
    summaries, vectors, qvecs, qtexts = load_data(cfg)
    log.info("data: %d summaries, %d vectors, %d queries", summaries.num_rows,
             vectors.num_rows, len(qvecs))
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="quiver-sql-bench-"))
    try:
        engines = Engines(base, summaries, vectors)
        try:
            build = {**engines.build,
                     "superfiles": {"quiver": engines.quiver_superfiles(),
                                    "infino": engines.infino_superfiles()}}
            log.info("built in %.1fs: %s", time.perf_counter() - t0, build["superfiles"])
            eqs = cfg["equalities"]
            cases = scan_cases(eqs) + search_cases(qvecs, qtexts, rewrite, eqs)
            measure(engines, cases, cfg)
        finally:
            engines.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    remote = sql_remote.measure(summaries, SUMMARIES_TABLE, COMMITS, {
        c.name: c.sql["quiver"][0] for c in cases if c.name in REMOTE_SCANS}, cfg)
    result = {
        **report.result_head("sql", quick, started, time.perf_counter() - t0, machine,
                             quiet),
        "config": {**cfg, "k": K, "commits": COMMITS, "summary_docs": summaries.num_rows,
                   "vector_docs": vectors.num_rows, "plain_row_group": PLAIN_ROW_GROUP,
                   "rewrite_module": rewrite, "infino_yaml": infino_cfg["yaml"]},
        "build": build,
        "s3_scans": remote,
        "cases": [{"name": c.name, "kind": c.kind, "note": c.note,
                   "sql": {e: t[0] for e, t in c.sql.items()}, "statements": max(
                       (len(t) for t in c.sql.values()), default=0), **c.results}
                  for c in cases],
        "notes": NOTES,
    }
    result["targets"] = evaluate_targets(cases, cfg["equalities"])
    result["equality_paths"] = equality_paths(cases, cfg["equalities"])
    return result


NOTES = [
    "All engines run in this one process on local disk (the OS page cache is not dropped,",
    "so reads come from memory). Quiver and infino read their own tables (16 appends, 16",
    "superfiles per table, BM25 on summary and name; the vector table adds a cosine index);",
    "DuckDB and DataFusion read one plain Parquet copy of the summaries (same rows,",
    "row groups of 65,536 rows like the superfiles, Snappy). DuckDB reads it through a view",
    "over read_parquet; DataFusion through register_parquet with its default settings.",
    "Each timed call sends the statement text and collects the whole result as Arrow;",
    "a Quiver statement includes pinning a snapshot (a manifest check on storage),",
    "parsing and rewriting with sqlglot, and DataFusion planning.",
    "The search functions run at planning time in both Quiver and infino. Vector and hybrid",
    "cases send a different query vector on each call (MiniLM query embeddings, the text",
    "of hybrid queries is the query's package name); search results are compared by top-10",
    "overlap with infino (not a target: the engines' vector indexes differ in recall).",
    "WHERE col = 'v' on a BM25-indexed text column is a point lookup: the engine finds the",
    "rows through the index and reads them without DataFusion (flight_server/sql/point.py);",
    "the 'via DataFusion' form adds AND TRUE, which the point lookup leaves to the index",
    "rewrite and DataFusion, the path such an equality took before.",
    "Quiver runs twice: as it serves (decoded rows of tables that fit its memory budget",
    "are kept in memory after the first scan, which the setup runs and waits for) and with",
    "that cache off, reading Parquet every time (the Parquet-only column).",
    "Selective equality, three forms in Quiver: WHERE col = 'v' is the engine's own choice",
    "(its index rewrite picks exact_match, bloom-narrowed files or a plain scan; the EXPLAIN",
    "notes below say which); the closed range col >= 'v' AND col <= 'v' is the plain scan",
    "path (no rewrite, min/max and page pruning still apply); the exact_match table",
    "function is the explicit index path. The index targets compare the first and the last",
    "with the scan path, all three on the Parquet-only engine. The data",
    "is sorted by name, so row-group statistics already make the name scan cheap; the",
    "summary value (4 rows) is the case statistics cannot prune.",
]


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    lines = [
        f"# SQL benchmark: Quiver vs infino, DuckDB and DataFusion ({result['started_utc']})",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, "
        f"{(m['ram_bytes'] or 0) / 2**30:.1f} GiB RAM, {m['os']}; Python {m['python']}; "
        f"{libs}; datafusion {report.library_version('datafusion')}, "
        f"sqlglot {report.library_version('sqlglot')}; commit "
        f"{m['git_commit']}; load average at start {m['load_average_at_start']}, at end "
        f"{result['load_average_at_end']}. Wall time {result['wall_s']:.0f} s.",
        "",
        f"Data: {result['config']['summary_docs']:,} PyPI summaries (name, version, month, "
        f"summary); {result['config']['vector_docs']:,} MiniLM rows (row, name, summary, "
        "embedding float32[384]).",
        "",
    ]
    lines += report.targets_section(result["targets"])
    lines += equality_section(result.get("equality_paths", []))
    lines += [
        "",
        "## p50 latency, ms (median of timed runs after warm-up)",
        "",
        "| statement | Quiver | Quiver (Parquet only) | infino | DuckDB (Parquet) | "
        "DataFusion (Parquet) | Quiver/DuckDB | Quiver/infino | check |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in result["cases"]:
        p = {e: (c[e]["p50_ms"] if e in c else None) for e in ENGINES}
        if not c["sql"]:
            lines.append(f"| {c['name']} | n/a | n/a | n/a | n/a | n/a | | | {c['note']} |")
            continue
        q = p["quiver"] or p["quiver_parquet"]
        rd = _fmt(q / p["duckdb"], 2) if q and p["duckdb"] else ""
        ri = _fmt(q / p["infino"], 2) if q and p["infino"] else ""
        lines.append(f"| {c['name']} | {_fmt(p['quiver'])} | {_fmt(p['quiver_parquet'])} | "
                     f"{_fmt(p['infino'])} | {_fmt(p['duckdb'])} | {_fmt(p['datafusion'])} | "
                     f"{rd} | {ri} | {_check_text(c.get('check', {}))} |")
    lines += ["", "## Quiver's index rewrite decisions (EXPLAIN notes)", ""]
    for c in result["cases"]:
        path = c.get("quiver_path")
        if path is not None:
            lines.append(f"- **{c['name']}**: {'; '.join(path) if path else 'no rewrite'}")
    lines += ["", "## Statements (the first text of each case)", ""]
    for c in result["cases"]:
        if c["sql"]:
            text = next(iter(c["sql"].values()))
            if len(text) > 160:
                text = text[:150] + " ...')"
            extra = f" ({c['note']})" if c["note"] else ""
            lines.append(f"- **{c['name']}**{extra}: `{text}`")
    b = result["build"]
    lines += [
        "",
        "## Build (not a target)",
        "",
        "| engine | table | rows | seconds (16 appends) | rows/s | superfiles |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for eng in ("quiver", "infino"):
        for name in (SUMMARIES_TABLE, VECTOR_TABLE):
            r = b[eng][name]
            lines.append(f"| {eng} | {name} | {r['rows']:,} | {_fmt(r['seconds'], 2)} | "
                         f"{r['rows_per_s']:,.0f} | {b['superfiles'][eng][name]} |")
    lines += sql_remote.markdown_section(result["s3_scans"], result["config"]["summary_docs"])
    pp = b["plain_parquet"]
    lines += ["", f"Plain Parquet copy: {pp['rows']:,} rows, {pp['row_groups']} row groups, "
              f"{pp['bytes'] / 2**20:.1f} MiB, written in {pp['seconds']:.2f} s.",
              "", "Notes: " + " ".join(result["notes"]), ""]
    return "\n".join(lines)


def equality_section(paths: list[dict[str, Any]]) -> list[str]:
    """The equality paths side by side (Parquet-only engine, p50 ms and speedup)."""
    if not paths:
        return []
    hows = ("WHERE", "via DataFusion", "exact_match", "scan path")
    lines = ["", "## Equality on an indexed text column: Quiver's paths (Parquet only)", "",
             "| equality | point lookup (WHERE) | index rewrite via DataFusion | exact_match | "
             "scan path | point lookup speedup over scan |",
             "| --- | --- | --- | --- | --- | --- |"]
    for p in paths:
        value = p["value"] if len(p["value"]) <= 20 else p["value"][:17] + "..."
        ms = p["p50_ms"]
        speedup = p["speedup_over_scan"].get("WHERE")
        lines.append(f"| {p['column']} = '{value}' | "
                     + " | ".join(_fmt(ms.get(h)) if ms.get(h) else "-" for h in hows)
                     + f" | {_fmt(speedup, 2) if speedup else '-'}x |")
    return lines


def _check_text(check: dict[str, Any]) -> str:
    if "agree" in check:
        rows = sorted(set(check["rows"].values()))
        return f"{'same rows' if check['agree'] else 'DIFFER'} ({'/'.join(map(str, rows))})"
    if "overlap_with_infino" in check:
        return f"top-{K} overlap {check['overlap_with_infino']}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = report.benchmark_parser(__doc__, quiet_load=3.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    quiet = report.wait_for_quiet(args.quiet_load, args.quiet_wait)
    result = run(args.quick, quiet)
    return report.publish(result, "sql", markdown)


if __name__ == "__main__":
    raise SystemExit(main())
