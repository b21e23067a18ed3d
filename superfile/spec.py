"""What a superfile indexes: the index specification given to the writer.

Vector columns: a vector is a fixed-size list of float16, float32 or float64
(``FLOAT[n]``). The index always holds float32: ``build_vector_index`` casts the
values, and a superfile's Parquet body keeps the column as it was given. A *table*
stores every indexed vector column as ``fixed_size_list<float32, d>``
(``IndexSpec.stored_schema``, applied by ``Table.create``): rows sent as float16 or
float64 are cast on the way in, so the stored vectors are exactly what the index and
exact distances compute with. Any other type (integer lists, strings, variable lists)
cannot be a vector column and is refused with the reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pyarrow as pa

from quiver.superfile.errors import IndexSpecError

# The code kinds a vector index can store (see quiver.superfile.vector.build).
VECTOR_CODES = ("auto", "sq8", "pq")


class Metric(enum.StrEnum):
    """Vector distance. Every metric reports a distance: smaller is nearer.

    cosine: 1 - cos(a, b); l2: Euclidean distance; inner_product: -<a, b>.
    """

    COSINE = "cosine"
    L2 = "l2"
    INNER_PRODUCT = "inner_product"

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        if isinstance(value, Metric):
            return value
        aliases = {"ip": cls.INNER_PRODUCT, "dot": cls.INNER_PRODUCT, "euclidean": cls.L2}
        key = str(value).strip().lower()
        if key in aliases:
            return aliases[key]
        try:
            return cls(key)
        except ValueError:
            raise IndexSpecError(
                f"unknown metric {value!r}: use one of cosine, l2, inner_product"
            ) from None


@dataclass(frozen=True)
class IndexSpec:
    """Which string columns get a BM25 index and which vector columns a kNN index.

    ``vector_codes`` optionally names the compact codes a vector column's index stores
    (``auto``, ``sq8`` or ``pq``; see ``VECTOR_CODES``); a column left out gets ``auto``:
    SQ8 for small files, PQ for large ones.
    """

    fts: tuple[str, ...] = ()
    vector: dict[str, Metric] = field(default_factory=dict)
    vector_codes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        fts: list[str] | tuple[str, ...] = (),
        vector: dict[str, str | Metric] | None = None,
        vector_codes: dict[str, str] | None = None,
    ) -> IndexSpec:
        return cls(
            fts=tuple(fts),
            vector={name: Metric.parse(m) for name, m in (vector or {}).items()},
            vector_codes={n: str(c).strip().lower() for n, c in (vector_codes or {}).items()},
        )

    @classmethod
    def default_for(cls, schema: pa.Schema) -> IndexSpec:
        """BM25 on every string column, cosine kNN on every fixed-size float list."""
        fts = [f.name for f in schema if is_text_type(f.type)]
        vec = {f.name: Metric.COSINE for f in schema if vector_dim(f.type) is not None}
        return cls(fts=tuple(fts), vector=vec)

    def validate(self, schema: pa.Schema) -> None:
        names = set(schema.names)
        for col in self.fts:
            if col not in names:
                raise IndexSpecError(f"full-text column {col!r} is not in the schema")
            if not is_text_type(schema.field(col).type):
                raise IndexSpecError(
                    f"full-text column {col!r} has type {schema.field(col).type}; "
                    "a BM25 index needs a string column"
                )
        for col in self.vector:
            if col not in names:
                raise IndexSpecError(f"vector column {col!r} is not in the schema")
            if vector_dim(schema.field(col).type) is None:
                raise IndexSpecError(
                    f"vector column {col!r} has type {schema.field(col).type}; "
                    f"{VECTOR_TYPES_TEXT}"
                )
        for col, codes in self.vector_codes.items():
            if col not in self.vector:
                raise IndexSpecError(f"vector_codes names {col!r}, which is not a vector column")
            if codes not in VECTOR_CODES:
                raise IndexSpecError(
                    f"unknown vector codes {codes!r} for {col!r}: use one of "
                    f"{', '.join(VECTOR_CODES)}"
                )
        overlap = set(self.fts) & set(self.vector)
        if overlap:
            raise IndexSpecError(f"columns {sorted(overlap)} cannot be both text and vector")


    def stored_schema(self, schema: pa.Schema) -> pa.Schema:
        """``schema`` as a table stores it: each indexed vector column as
        ``fixed_size_list<float32, d>`` (float16 and float64 values are cast)."""
        fields = []
        for f in schema:
            dim = vector_dim(f.type) if f.name in self.vector else None
            if dim is not None and not pa.types.is_float32(f.type.value_type):
                f = pa.field(f.name, pa.list_(pa.float32(), dim), f.nullable, f.metadata)
            fields.append(f)
        return pa.schema(fields, metadata=schema.metadata)


VECTOR_TYPES_TEXT = ("a vector index needs a fixed-size list of float16, float32 or float64 "
                     "(FLOAT[n]); the index and the table hold it as float32")


def is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def vector_dim(t: pa.DataType) -> int | None:
    """The dimension of a vector type, ``fixed_size_list<float16|float32|float64, d>``,
    else None."""
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type) \
            and t.list_size > 0:
        return t.list_size
    return None
