"""Bounded versions of DataFusion functions whose output grows with an argument.

DataFusion's memory pool accounts for operators (sorts, joins, aggregates), not for
what one expression allocates, so ``repeat('x', 1000000000)`` would build a gigabyte
string for every row. The versions registered here under the same names compute the
size of their output first and refuse one that would exceed ``MAX_STRING_BYTES`` per
call (one batch of rows).
"""

from __future__ import annotations

import datafusion
import pyarrow as pa
import pyarrow.compute as pc

from quiver.flight_server.sql.errors import SqlResourceError

# Most bytes one call of a bounded function may produce (one batch of rows).
MAX_STRING_BYTES = 64 << 20


def _repeat(strings: pa.Array, counts: pa.Array) -> pa.Array:
    counts = pc.max_element_wise(pc.cast(counts, pa.int64()), 0)
    lengths = pc.cast(pc.binary_length(strings), pa.int64())
    total = pc.sum(pc.multiply_checked(lengths, counts)).as_py() or 0
    if total > MAX_STRING_BYTES:
        raise SqlResourceError(f"repeat() would build {total} bytes in one batch of rows; "
                               f"the limit is {MAX_STRING_BYTES}")
    return pc.binary_repeat(strings, counts)


def register(ctx: datafusion.SessionContext) -> None:
    """Replaces DataFusion's unbounded functions in ``ctx`` by the bounded ones."""
    ctx.register_udf(datafusion.udf(_repeat, [pa.string(), pa.int64()], pa.string(),
                                    "immutable", name="repeat"))
