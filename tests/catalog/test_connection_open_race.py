"""Threads opening one table at once through one connection all get the same table object,
so their appends share group commits and the table has one background upkeep."""

from __future__ import annotations

import threading

import pyarrow as pa

from quiver import catalog

THREADS = 16


def test_threads_racing_to_open_a_table_share_one_object(tmp_path):
    root = str(tmp_path / "root")
    with catalog.connect(root) as setup:
        setup.create_table("t", pa.schema([("x", pa.int64())]))
    with catalog.connect(root) as conn:
        got: list[object] = [None] * THREADS
        start = threading.Barrier(THREADS)

        def run(i: int) -> None:
            start.wait()
            got[i] = conn.open_table("t")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len({id(t) for t in got}) == 1
        assert got[0] is conn.open_table("t")
