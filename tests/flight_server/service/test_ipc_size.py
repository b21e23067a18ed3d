"""What a record batch message declares it decodes to, read from its metadata: the sum of
its buffers' lengths, with or without compression, for any batch; damaged metadata is
refused as malformed, never misread as a small batch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.flight_server.service.ipc_size import MalformedBatch, decoded_bytes

COMPRESSIONS = [None, "lz4", "zstd"]


def _message(batch: pa.RecordBatch, compression: str | None) -> pa.ipc.Message:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    reader = pa.ipc.MessageReader.open_stream(sink.getvalue())
    reader.read_next_message()  # the schema
    return reader.read_next_message()


@st.composite
def batches(draw) -> pa.RecordBatch:
    rows = draw(st.integers(0, 300))
    ints = draw(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
                         min_size=rows, max_size=rows))
    texts = draw(st.lists(st.one_of(st.none(), st.text(max_size=20)),
                          min_size=rows, max_size=rows))
    lists = draw(st.lists(st.one_of(st.none(), st.lists(st.integers(-2**31, 2**31 - 1),
                                                        max_size=4)),
                          min_size=rows, max_size=rows))
    flags = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    return pa.record_batch([pa.array(ints, pa.int64()), pa.array(texts, pa.string()),
                            pa.array(lists, pa.list_(pa.int32())), pa.array(flags)],
                           names=["i", "s", "l", "b"])


@settings(max_examples=60, deadline=None)
@given(batch=batches(), compression=st.sampled_from(COMPRESSIONS))
def test_the_declared_size_is_the_sum_of_the_batch_buffers(batch, compression) -> None:
    msg = _message(batch, compression)
    assert decoded_bytes(msg.metadata, msg.body) == batch.get_total_buffer_size()


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_a_compressed_batch_declares_what_it_expands_to_not_what_it_sends(compression
                                                                         ) -> None:
    zeros = pa.record_batch([pa.array(np.zeros(1_000_000, np.int64))], names=["x"])
    msg = _message(zeros, compression)
    assert msg.body.size < 100_000
    assert decoded_bytes(msg.metadata, msg.body) == 8_000_000


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 400), compression=st.sampled_from(COMPRESSIONS))
def test_cut_metadata_is_malformed_or_read_whole_never_misread(cut, compression) -> None:
    batch = pa.record_batch([pa.array(np.arange(100, dtype=np.int64)),
                             pa.array([str(i) for i in range(100)])], names=["i", "s"])
    msg = _message(batch, compression)
    meta = msg.metadata.to_pybytes()
    if cut >= len(meta):
        assert decoded_bytes(meta, msg.body) == batch.get_total_buffer_size()
        return
    try:
        size = decoded_bytes(meta[:cut], msg.body)
    except MalformedBatch:
        return
    # A cut that still parses names the same buffers (only trailing padding was cut).
    assert size == batch.get_total_buffer_size()


def test_a_body_shorter_than_its_buffers_is_malformed() -> None:
    batch = pa.record_batch([pa.array(np.arange(1000, dtype=np.int64))], names=["i"])
    msg = _message(batch, None)
    with pytest.raises(MalformedBatch, match="outside the message body"):
        decoded_bytes(msg.metadata, msg.body.to_pybytes()[:100])


def test_a_schema_message_is_not_a_record_batch() -> None:
    schema_msg = pa.ipc.read_message(pa.schema([("i", pa.int64())]).serialize())
    with pytest.raises(MalformedBatch, match="not a record batch"):
        decoded_bytes(schema_msg.metadata, b"")
