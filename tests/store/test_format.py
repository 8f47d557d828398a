"""The byte-exact examples of FORMAT.md (format_vectors.json), reproduced by the encoders."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import lance_store
from lance_store import index as sparse_index
from lance_store.records import JSON, encode
from lance_store.segment.header import BatchHeader, encode_batch
from lance_store.sortkey import SortKey

SPEC = Path(__file__).resolve().parents[2] / "spec"
VECTORS = json.loads((SPEC / "format_vectors.json").read_text())
TS = 1706918400000000000


def test_sortkey_vector():
    v = VECTORS["sortkey"]
    key = SortKey.make(TS, node_id=1, actor_id=2, sequence=3)
    assert key.timestamp_ns == v["high_word"]
    assert key.low == v["low_word"]
    assert key.low.to_bytes(8, "big").hex().upper() == v["low_word_be_hex"]
    assert (key.node_id, key.actor_id, key.sequence) == (1, 2, 3)


def _batch_1():
    payload, n = encode([(JSON, b"hello"), (JSON, b"world")])
    hdr, _ = encode_batch(payload, n, base_offset=0, first_timestamp_ns=TS,
                          first_key_low=SortKey.make(TS, 1, 0, 0).low)
    return hdr + payload


def _batch_2():
    payload, n = encode([(JSON, b"x" * 10)])
    hdr, _ = encode_batch(payload, n, base_offset=97, first_timestamp_ns=TS + 1000,
                          first_key_low=SortKey.make(TS, 1, 0, 2).low, producer_id=7, producer_seq=1)
    return hdr + payload


def test_batch_vectors():
    assert _batch_1().hex().upper() == VECTORS["batch_1"]["hex"]
    assert len(_batch_1()) == VECTORS["batch_1"]["length"]
    assert _batch_2().hex().upper() == VECTORS["batch_2"]["hex"]
    hdr = BatchHeader.unpack(_batch_2())
    assert (hdr.base_offset, hdr.producer_id, hdr.producer_seq, hdr.record_count) == (97, 7, 1, 1)


def test_store_writes_the_segment_vector(tmp_path):
    with lance_store.open(tmp_path / "d", create=True, node_id=1) as store:
        topic = store.create_topic("t")
        store.clock.sequence = 0
        topic.append([(JSON, b"hello"), (JSON, b"world")], timestamp_ns=TS)
        topic.append([(JSON, b"x" * 10)], timestamp_ns=TS + 1000, producer_id=7, producer_seq=1)
        active = topic.active.path
        assert topic.high_watermark == VECTORS["segment"]["high_watermark"]
        data = Path(active).read_bytes()[:topic.high_watermark]
        assert data.hex().upper() == VECTORS["segment"]["hex"]
        topic.seal_active()
        idx = Path(topic.segments[0].path).with_suffix(".idx").read_bytes()
        assert idx.hex().upper() == VECTORS["index"]["hex"]
        sealed = Path(topic.segments[0].path).read_bytes()
        assert sealed.hex().upper() == VECTORS["segment"]["hex"]  # truncated to its data at seal


def test_index_is_a_numpy_structured_array(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(bytes.fromhex(VECTORS["index"]["hex"]))
    entries = sparse_index.load(path)
    assert entries.dtype == np.dtype([("ts", "<u8"), ("key", "<u8"), ("offset", "<u8")])
    assert int(entries["ts"][0]) == TS and int(entries["offset"][0]) == 0


def test_index_entries_follow_the_interval():
    offsets = np.array([0, 100, 4000, 4096, 5000, 8191, 8192, 9000], dtype=np.uint64)
    ts = np.arange(len(offsets), dtype=np.uint64)
    entries = sparse_index.build_entries(offsets, ts, ts, 4096)
    assert entries["offset"].tolist() == [0, 4096, 8192]


def test_segment_names_sort_by_offset(tmp_path):
    from lance_store.segment import naming
    a = naming.SegmentName(97, 5)
    b = naming.SegmentName(1000, 3)
    assert sorted([b.filename, a.filename]) == [a.filename, b.filename]
    assert naming.parse(a.sealed_as(9).filename) == naming.SegmentName(97, 5, 9)
    assert naming.parse("12_5.lnc").legacy
    assert naming.parse("metadata.json") is None
