"""bm25_snippet(column, query [, words]) gives what a per-row brute-force oracle gives:
the same tokenizer as the index, the window with the most distinct query terms (then
matches, then earliest) centred on its matches, HTML-escaped text and ``<b>`` marks on
exactly the words that match — in SQL over search results and over whole tables.
"""

from __future__ import annotations

import html
import uuid

import numpy as np
import pyarrow as pa
import pytest

from quiver import catalog
from quiver.catalog.storage import drop_memory_store
from quiver.flight_server.sql import SqlEngine
from quiver.flight_server.sql.errors import SqlPlanError
from quiver.flight_server.sql.snippet import snippets
from quiver.superfile.fts.query import parse_fields
from quiver.superfile.fts.tokenizer import _get_tables, tokenize

VOCAB = ["rust", "Rust", "RUST", "async", "ASYNC", "straße", "STRASSE", "İstanbul", "ΣΑΣ",
         "σας", "日本語", "x1", "42", "tokio", "Tokio", "web", "framework", "e\u0301",
         "😀", "<b>", "&amp;", "'q'", '"', "…", "café", "CAFÉ", "rustacean"]
SEPS = [" ", ", ", "-", "\n", "  ", "/", "<", "&", ". ", ">"]
QUERIES = [("rust async", ""), ('"web framework" tok*', ""), ("rust -async", ""),
           ("RUST^2 σας", ""), ("istanbul café", ""), ("body:rust title:async", "body"),
           ("日本語 42", ""), ('"rust async"~3', ""), ("strasse straße", "")]


def oracle(text: str | None, query: str, words: int, field: str = "") -> str | None:
    """The snippet by the module's rules, one row at a time, from Python strings."""
    if text is None:
        return None
    tables = _get_tables()
    low = text.translate(tables.lower_map)
    spans, pos = [], 0
    for m in tables.splitter.finditer(low):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < len(low):
        spans.append((pos, len(low)))
    assert [low[a:b] for a, b in spans] == tokenize(text)
    if not spans:
        return ""
    q = parse_fields(query, [field or "_"]).per_field[field or "_"]
    terms = list(dict.fromkeys([*q.terms, *(t for p in q.phrases for t in p.tokens)]))
    prefixes = list(q.prefixes)

    def term_of(tok: str) -> int:
        for j, t in enumerate(terms):
            if tok == t:
                return j
        for j, p in enumerate(prefixes):
            if tok.startswith(p):
                return len(terms) + j
        return -1

    ids = [term_of(low[a:b]) for a, b in spans]
    n = len(spans)
    best, best_score = 0, -1
    for g in range(n):
        inside = [i for i in ids[g:g + words] if i >= 0]
        score = len(set(inside)) * (words + 1) + len(inside)
        if score > best_score:
            best, best_score = g, score
    window = range(best, min(best + words, n))
    found = [i for i in window if ids[i] >= 0]
    start = best
    if found:
        f, last = found[0], found[-1]
        start = max(min(f - (words - (last - f + 1)) // 2, n - words), 0)
    stop = min(start + words, n)
    out = ["… "] if start > 0 else []
    for i in range(start, stop):
        if i > start:
            out.append(html.escape(text[spans[i - 1][1]:spans[i][0]]))
        word = html.escape(text[spans[i][0]:spans[i][1]])
        out.append(f"<b>{word}</b>" if ids[i] >= 0 else word)
    if stop < n:
        out.append(" …")
    return "".join(out)


def _texts(n: int, seed: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(None)
        elif r < 0.08:
            out.append("" if r < 0.065 else "... -- !!")
        else:
            k = int(rng.integers(1, 90))
            parts = [str(rng.choice(SEPS))] if rng.random() < 0.3 else []
            for i in range(k):
                if i:
                    parts.append(str(rng.choice(SEPS)))
                parts.append(str(rng.choice(VOCAB)))
            out.append("".join(parts))
    return out


@pytest.mark.parametrize(("query", "field"), QUERIES)
@pytest.mark.parametrize("words", [1, 4, 30])
def test_snippets_match_the_per_row_oracle(query, field, words):
    texts = _texts(300, hash((query, words)) & 0xFFFF)
    got = snippets(pa.array(texts, pa.string()), query, words, field).to_pylist()
    assert got == [oracle(t, query, words, field) for t in texts]


def test_snippets_of_a_sliced_chunked_view_array_match_the_oracle():
    texts = _texts(200, 7)
    arr = pa.chunked_array([pa.array(texts[:120], pa.string_view()),
                            pa.array(texts[120:], pa.string_view())])
    got = snippets(arr, "rust async", 6).to_pylist()
    assert got == [oracle(t, "rust async", 6) for t in texts]
    sliced = pa.array(texts, pa.string()).slice(37, 101)
    assert snippets(sliced, "tok*", 3).to_pylist() == [oracle(t, "tok*", 3)
                                                         for t in texts[37:138]]


def test_marked_words_are_exactly_the_words_the_query_matches():
    text = "Rust & <RUST>; rusty rustacean ASYNC asyncio 'rust'"
    got = snippets(pa.array([text]), "rust async", 30).to_pylist()[0]
    assert got == ("<b>Rust</b> &amp; &lt;<b>RUST</b>&gt;; rusty rustacean <b>ASYNC</b> "
                   "asyncio &#x27;<b>rust</b>")


def test_text_is_escaped_so_no_markup_but_the_marks_survives():
    got = snippets(pa.array(['<script>alert("x")</script> rust']), "rust").to_pylist()[0]
    assert got == "script&gt;alert(&quot;x&quot;)&lt;/script&gt; <b>rust</b>"
    bare = got.replace("<b>", "").replace("</b>", "")
    assert "<" not in bare and ">" not in bare


def test_window_prefers_distinct_terms_over_repeats():
    text = "rust rust rust rust filler filler rust async filler filler filler"
    got = snippets(pa.array([text]), "rust async", 3).to_pylist()[0]
    assert got == "… <b>rust</b> <b>async</b> filler …"


# -- SQL ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    uri = f"memory://snip{uuid.uuid4().hex}"
    con = catalog.connect(uri)
    schema = pa.schema([("title", pa.string()), ("body", pa.string())])
    table = con.create_table("docs", schema, fts=["title", "body"])
    for seed in range(3):
        body = _texts(120, 100 + seed)
        table.append(pa.table({"title": [f"t{seed}-{i}" for i in range(120)], "body": body},
                              schema=schema))
        table.commit()
    table.delete([("title", "=", "t0-3")])
    yield SqlEngine(con)
    con.close()
    drop_memory_store(uri)


@pytest.fixture(scope="module")
def live(engine) -> dict[int, str | None]:
    rows = engine.connection.open_table("docs").to_arrow(with_id=True)
    return dict(zip(rows.column("_id").to_pylist(), rows.column("body").to_pylist(),
                    strict=True))


def test_snippets_over_a_search_result_match_the_two_step_oracle(engine, live):
    got = engine.execute("SELECT _id, title, bm25_snippet(body, 'rust async') AS s FROM "
                         "bm25_search('docs', 'body', 'rust async', 10)")
    ids = engine.execute("SELECT _id FROM bm25_search('docs', 'body', 'rust async', 10)"
                         ).column(0).to_pylist()
    assert got.column("_id").to_pylist() == ids and len(ids) == 10
    assert got.column("s").to_pylist() == [oracle(live[i], "rust async", 30) for i in ids]


def test_snippets_over_a_whole_table_scan_match_the_oracle(engine, live):
    got = engine.execute("SELECT _id, bm25_snippet(body, '\"web framework\" tok*', 7) "
                         "FROM docs ORDER BY _id")
    ids = got.column(0).to_pylist()
    assert sorted(live) == ids
    assert got.column(1).to_pylist() == [oracle(live[i], '"web framework" tok*', 7)
                                         for i in ids]
    # A bare call keeps the text the statement wrote as its column name.
    assert got.column_names[1] == "bm25_snippet(body, '\"web framework\" tok*', 7)"


def test_snippets_beside_bm25_in_an_ordinary_query(engine, live):
    got = engine.execute("SELECT _id, bm25_snippet(d.body, 'body:istanbul', 5) AS s FROM docs d "
                         "WHERE bm25(d.body, 'body:istanbul') > 0 ORDER BY _id")
    assert got.num_rows > 0
    assert got.column("s").to_pylist() == [oracle(live[i], "body:istanbul", 5, "body")
                                           for i in got.column("_id").to_pylist()]
    assert all("<b>" in s for s in got.column("s").to_pylist())


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT bm25_snippet(body, title) FROM docs", "must be a constant"),
    ("SELECT bm25_snippet(body, 'rust', 0) FROM docs", "from 1 to 1000"),
    ("SELECT bm25_snippet(body, 'rust', 1001) FROM docs", "from 1 to 1000"),
    ("SELECT bm25_snippet(body) FROM docs", "takes 2 or 3 arguments"),
    ("SELECT bm25_snippet(body, '-- !!') FROM docs", "no searchable token"),
    ("SELECT bm25_snippet(body, '\"unclosed') FROM docs", "unclosed quote"),
])
def test_snippet_refuses_bad_arguments_by_name(engine, sql, message):
    with pytest.raises(SqlPlanError, match=message):
        engine.execute(sql)


def test_snippet_parameters_are_declared_and_bound(engine, live):
    assert engine.parameter_types("SELECT bm25_snippet(body, ?, ?) FROM docs") == \
        [pa.string(), pa.int64()]
    prepared = engine.prepare("SELECT _id, bm25_snippet(body, ?, ?) AS s FROM docs")
    assert prepared.dataset_schema.field("s").type == pa.string()
    got = engine.execute("SELECT _id, bm25_snippet(body, ?, ?) AS s FROM docs ORDER BY _id",
                         ["rust", 4])
    assert got.column("s").to_pylist() == [oracle(live[i], "rust", 4)
                                           for i in got.column("_id").to_pylist()]
