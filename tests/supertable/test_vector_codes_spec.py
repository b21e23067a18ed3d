"""A table's choice of vector codes is part of its spec: it survives a reopen, reaches the
files its writes produce, and searches over those files stay exact after the rerank."""

from __future__ import annotations

import uuid

import numpy as np

from quiver.catalog.storage import open_store
from quiver.superfile import IndexSpec
from quiver.superfile.reader import SuperfileReader
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs

OPTIONS = TableOptions(background_indexing=False, max_rows_per_file=6000)


def test_vector_codes_persist_in_the_manifest_and_shape_written_files():
    store = open_store(f"memory://codes{uuid.uuid4().hex}")
    spec = IndexSpec.of(fts=["body"], vector={"emb": "l2"}, vector_codes={"emb": "pq"})
    table = Table.create(store, "t", "t", docs_schema(), spec=spec, options=OPTIONS)
    data = make_docs(5000, seed=4)
    try:
        table.append(data)
    finally:
        table.close()
    again = Table.open(store, "t", "t", options=OPTIONS)
    try:
        assert again.spec.vector_codes == {"emb": "pq"}
        files = again.snapshot().manifest.files
        assert files
        for entry in files:
            raw, _ = store.get(f"t/{entry.path}")
            assert SuperfileReader.open(raw).vector("emb").codes_name == "pq"
        x = np.asarray(data.column("emb").to_pylist(), dtype=np.float32)
        for q in x[[3, 777, 4096]] + 0.01:
            got = again.vector_search("emb", q, 5, columns=["year"])
            want = np.sort(np.linalg.norm(x - q, axis=1))[:5]
            # Exact distances of the true neighbours: the rerank read the column, not codes.
            assert np.allclose(np.sort(got.column("score").to_numpy()), want, atol=1e-4)
    finally:
        again.close()
