"""Compiles every search kernel ahead of the first real query.

The BM25, phrase, match, vector-build and bloom kernels are compiled on first use and
cached on disk (``superfile.kernels``). ``warm_up`` runs each kind of statement once on a
small table in a private in-memory root, so that the compiles happen here — at install
(``make install``), at image build (the Dockerfile) and in the background when a server
starts — and not inside a user's first query. With the cache already on disk it only loads
the kernels, which takes well under a second.

Run ``python -m quiver.flight_server.sql.warmup`` to warm an installation.
"""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np

log = logging.getLogger(__name__)

_WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
_DIM = 8
_ROWS = 64

_QUERIES = (
    "SELECT id FROM bm25_search('warm', 'body', 'alpha beta', 10)",
    # Again: a repeated search across files builds its tighter intervals (another kernel).
    "SELECT id FROM bm25_search('warm', 'body', 'alpha beta', 10)",
    "SELECT id FROM bm25_search('warm', 'body', 'alpha beta', 10, 'and')",
    "SELECT id FROM bm25_search('warm', 'title^2,body', '\"alpha beta\" gam*', 10)",
    "SELECT id FROM bm25_search('warm', 'body', '\"alpha gamma\"~3 -delta', 10)",
    "SELECT id, bm25_snippet(body, 'beta gamma') FROM warm "
    "WHERE bm25(body, 'beta gamma') > 0 AND year > 2000",
    "SELECT id FROM warm WHERE title = 'alpha beta'",
    "SELECT id FROM vector_search('warm', 'emb', '{v}', 5)",
    "SELECT id FROM warm WHERE knn(emb, '{v}', 5) AND year > 2000",
    "SELECT id FROM hybrid_search('warm', 'body', 'alpha', 'emb', '{v}', 5)",
)


def _rows(start: int) -> str:
    rng = np.random.default_rng(start)
    values = []
    for i in range(start, start + _ROWS):
        title = " ".join(rng.choice(_WORDS, 2))
        body = " ".join(rng.choice(_WORDS, 12))
        vec = ", ".join(f"{x:.3f}" for x in rng.standard_normal(_DIM))
        values.append(f"({i}, '{title}', '{body}', {1990 + i % 40}, [{vec}])")
    return ", ".join(values)


def _check_an_index() -> None:
    # The whole-index check runs off the searching thread once files are open; whether the
    # statements above left it compiled depends on the store, so it is compiled here too.
    import pyarrow as pa

    from quiver.superfile.fts import FtsIndexReader, build_fts_index
    from quiver.superfile.ranges import BytesRangeReader

    blob, _ = build_fts_index(pa.array(list(_WORDS)))
    FtsIndexReader.open(BytesRangeReader(blob), verify=True).check_resident()


def warm_up() -> float:
    """Runs every kind of search once on a throwaway in-memory table; the seconds taken."""
    from quiver.catalog.storage import drop_memory_store
    from quiver.flight_server.sql import connect
    from quiver.superfile.fts.multi import settle_interval_builds
    from quiver.supertable.fts_lookup import settle_checks
    from quiver.supertable.options import TableOptions

    t0 = time.perf_counter()
    # Everything on the calling thread: each kernel compiles once, in a fixed order, and
    # no compile is left running on a worker when the process exits.
    serial = TableOptions(build_threads=1, search_threads=1, background_indexing=False)
    conn = connect(f"memory://quiver-warm-up-{uuid.uuid4().hex}", table_options=serial)
    try:
        conn.sql(f"CREATE TABLE warm (id BIGINT, title VARCHAR, body VARCHAR, year INT, "
                 f"emb FLOAT[{_DIM}]) WITH (fts = 'title,body', vector = 'emb')")
        # Two appends: searches over more than one file take the table-wide kernels.
        conn.sql(f"INSERT INTO warm VALUES {_rows(0)}")
        conn.sql(f"INSERT INTO warm VALUES {_rows(_ROWS)}")
        v = "[" + ", ".join(["0.5"] * _DIM) + "]"
        for query in _QUERIES:
            conn.sql(query.replace("{v}", v))
        settle_interval_builds()
        settle_checks()
        _check_an_index()
    finally:
        conn.close()
        drop_memory_store(conn.uri)
    took = time.perf_counter() - t0
    log.info("search kernels ready in %.2fs", took)
    return took


def main() -> None:
    # Only this module's line and warnings: the statements' own logs are noise here.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    warm_up()


if __name__ == "__main__":
    main()
