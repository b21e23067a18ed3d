"""Vector columns of float16 and float64: indexed as float32, the same neighbours as float32;
other types refused with the reason."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from quiver.superfile import IndexSpec, IndexSpecError, SuperfileReader, write_superfile
from quiver.superfile.spec import vector_dim

WIDTHS = [pa.float16(), pa.float32(), pa.float64()]


def _vectors(n: int = 300, dim: int = 8, seed: int = 3) -> np.ndarray:
    # Values a float16 holds exactly, so every width stores the same numbers.
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(np.float16)


def _column(x: np.ndarray, value_type: pa.DataType) -> pa.Array:
    flat = pa.array(x.reshape(-1).astype(value_type.to_pandas_dtype()), value_type)
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


@pytest.mark.parametrize("value_type", WIDTHS, ids=str)
def test_every_float_width_is_a_vector_type_indexed_by_default(value_type) -> None:
    t = pa.list_(value_type, 8)
    assert vector_dim(t) == 8
    assert IndexSpec.default_for(pa.schema([("v", t)])).vector == {"v": "cosine"}


@pytest.mark.parametrize("metric", ["cosine", "l2", "inner_product"])
@pytest.mark.parametrize("value_type", [pa.float16(), pa.float64()], ids=str)
def test_float16_and_float64_vectors_find_the_float32_neighbours(value_type, metric) -> None:
    x = _vectors()
    q = x[7].astype(np.float32) + 0.01
    spec = IndexSpec.of(vector={"v": metric})
    expected = SuperfileReader.open(write_superfile(
        pa.table({"v": _column(x, pa.float32())}), spec).data).vector_search("v", q, k=10)
    written = write_superfile(pa.table({"v": _column(x, value_type)}), spec)
    reader = SuperfileReader.open(written.data)
    ids, dists = reader.vector_search("v", q, k=10)
    assert ids.tolist() == expected[0].tolist()
    np.testing.assert_allclose(dists, expected[1], rtol=1e-6, atol=1e-6)
    # The Parquet body keeps the column's own type; only the index is float32.
    assert reader.read_table(columns=["v"]).schema.field("v").type == pa.list_(value_type, 8)


def test_stored_schema_makes_indexed_vectors_float32_and_leaves_the_rest() -> None:
    schema = pa.schema([pa.field("a", pa.list_(pa.float16(), 4), nullable=False),
                        ("b", pa.list_(pa.float64(), 4)), ("c", pa.list_(pa.float64(), 4))])
    stored = IndexSpec.of(vector={"a": "cosine", "b": "l2"}).stored_schema(schema)
    assert stored.field("a").type == pa.list_(pa.float32(), 4)
    assert not stored.field("a").nullable
    assert stored.field("b").type == pa.list_(pa.float32(), 4)
    assert stored.field("c").type == pa.list_(pa.float64(), 4)  # not indexed: as given


@pytest.mark.parametrize("column_type", [pa.list_(pa.int8(), 4), pa.string(),
                                         pa.list_(pa.float32())], ids=str)
def test_a_type_that_cannot_be_a_vector_is_refused_with_the_reason(column_type) -> None:
    with pytest.raises(IndexSpecError, match="fixed-size list of float16, float32 or float64"):
        IndexSpec.of(vector={"v": "cosine"}).validate(pa.schema([("v", column_type)]))
