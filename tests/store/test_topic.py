"""Topics through the public API: appends, reads, scans, rotation, retention, time lookups."""
import os
import time

import numpy as np
import pytest

import lance_store
from lance_store import OffsetError, ReadOnlyError, StoreConfig, StoreLockedError, UnknownTopicError
from lance_store.segment.header import BATCH_OVERHEAD

TS = 1_700_000_000_000_000_000


@pytest.fixture
def store(tmp_path):
    s = lance_store.open(tmp_path / "data", create=True, node_id=1,
                         config=StoreConfig(segment_max_bytes=8192))
    yield s
    s.close()


def test_append_returns_the_batch_bounds(store):
    t = store.create_topic("orders")
    r = t.append([b"a" * 10, b"b" * 20])
    assert (r.offset, r.record_count) == (0, 2)
    assert r.next_offset == BATCH_OVERHEAD + 15 + 25 == t.high_watermark
    r2 = t.append([b"c"])
    assert r2.offset == r.next_offset


def test_read_returns_whole_batches_and_never_cuts_one(store):
    t = store.create_topic("t")
    results = [t.append([bytes([i]) * 100] * 3) for i in range(5)]
    batches, nxt = t.read(0, max_bytes=1)             # smaller than one batch: sent whole
    assert len(batches) == 1 and nxt == results[0].next_offset
    batches, nxt = t.read(results[1].offset, max_bytes=2 * (results[0].next_offset) + 10)
    assert [b.offset for b in batches] == [results[1].offset, results[2].offset]
    data, nxt, count = t.read_raw(0, 1 << 20)
    assert count == 15 and nxt == t.high_watermark


def test_read_errors_name_the_problem(store):
    t = store.create_topic("t")
    r = t.append([b"x" * 50])
    assert t.read_raw(r.next_offset, 100) == (b"", r.next_offset, 0)   # at the high watermark
    with pytest.raises(OffsetError, match="INVALID_OFFSET"):
        t.read_raw(3, 100)
    with pytest.raises(OffsetError, match="OFFSET_OUT_OF_RANGE") as exc:
        t.read_raw(r.next_offset + 1, 100)
    assert exc.value.high == r.next_offset
    assert t.read_raw(2**64 - 1, 100) == (b"", r.next_offset, 0)        # tail probe


def test_records_carry_offsets_and_sortkeys(store):
    t = store.create_topic("t")
    t.append([b"one", b"two"], timestamp_ns=TS)
    t.append([(0x01, b'{"a":1}')], timestamp_ns=TS + 5)
    recs = list(t.records())
    assert [r.value for r in recs] == [b"one", b"two", b'{"a":1}']
    assert [r.type for r in recs] == [0, 0, 1]
    assert recs[0].sortkey.timestamp_ns == TS and recs[1].sortkey.low == recs[0].sortkey.low + 1
    assert recs[0].offset == BATCH_OVERHEAD
    assert [r.value for r in t.records(start=recs[2].offset - BATCH_OVERHEAD)] == [b'{"a":1}']


def test_rotation_seals_segments_with_indexes_and_keeps_offsets(store):
    t = store.create_topic("t")
    results = [t.append([os.urandom(1000)]) for _ in range(30)]
    assert len(t.segments) > 2
    sealed = [s for s in t.segments if s.sealed]
    for prev, nxt in zip(t.segments, t.segments[1:]):
        assert prev.end == nxt.name.base
    for s in sealed:
        assert os.path.exists(os.path.join(t.folder, s.name.index_filename))
        assert os.path.getsize(s.path) == s.size
    for r in results:                                   # every batch still readable by offset
        batches, _ = t.read(r.offset, 1)
        assert batches[0].offset == r.offset


def test_scan_chunks_are_numpy_views(store):
    t = store.create_topic("t")
    for i in range(20):
        t.append([bytes([i]) * 64] * 4, timestamp_ns=TS + i)
    seen = []
    for c in t.scan():                    # a chunk's buffer lives until the next chunk
        assert c.lengths.dtype == np.uint32 and (c.lengths == 64).all()
        rows = c.fixed_width_values()
        assert rows.shape == (len(c), 64)
        assert (rows[:, 0] == (c.timestamps - TS)).all()   # value bytes match their batch
        assert bytes(c.value(0))[0] == int(c.timestamps[0] - TS)
        seen.append(len(c))
    assert len(seen) == len([s for s in t.segments if s.size])
    assert sum(seen) == 80


def test_offset_for_time(store):
    t = store.create_topic("t")
    offs = [t.append([b"v" * 500], timestamp_ns=TS + i * 1000).offset for i in range(40)]
    assert t.offset_for_time(0) == offs[0]
    assert t.offset_for_time(TS + 10_000) == offs[10]
    assert t.offset_for_time(TS + 10_001) == offs[11]
    assert t.offset_for_time(TS + 10**12) == t.high_watermark


def test_retention_by_size_deletes_only_sealed_segments_and_never_moves_offsets(store):
    t = store.create_topic("t")
    results = [t.append([os.urandom(1000)]) for _ in range(40)]
    t.set_retention(max_bytes=10_000)
    removed = t.apply_retention()
    assert removed and all("-" in name for name in removed)
    assert t.low_watermark == t.segments[0].name.base > 0
    survivors = [r for r in results if r.offset >= t.low_watermark]
    for r in survivors:
        assert t.read(r.offset, 1)[0][0].offset == r.offset
    with pytest.raises(OffsetError, match="OFFSET_OUT_OF_RANGE"):
        t.read(0, 100)


def test_retention_by_age_uses_seal_time(store):
    t = store.create_topic("t")
    for _ in range(20):
        t.append([os.urandom(1000)])
    t.set_retention(max_age_secs=60)
    assert t.apply_retention() == []                  # everything sealed just now
    sealed = [s.name.filename for s in t.segments if s.sealed]
    removed = t.apply_retention(now=time.time() + 3600)
    assert removed == sealed and len(t.segments) == 1  # only the active one is left
    assert t.low_watermark == t.active.name.base


def test_high_watermark_survives_when_retention_removed_everything(store, tmp_path):
    t = store.create_topic("t")
    for _ in range(20):
        t.append([os.urandom(1000)])
    t.seal_active()
    high = t.high_watermark
    t.set_retention(max_bytes=1)
    t.apply_retention()
    store.close()
    with lance_store.open(tmp_path / "data") as s2:
        assert s2.topic("t").high_watermark == high == s2.topic("t").low_watermark
        assert s2.topic("t").append([b"next"]).offset == high


def test_reopen_recovers_topics_and_continues_the_clock(store, tmp_path):
    t = store.create_topic("t", retention={"max_age_secs": 5, "max_bytes": 0})
    r = t.append([b"x"] * 3, timestamp_ns=TS)
    store.close()
    with lance_store.open(tmp_path / "data") as s2:
        t2 = s2.topic("t")
        assert t2.high_watermark == r.next_offset and t2.retention.max_age_secs == 5
        r2 = t2.append([b"y"], timestamp_ns=TS - 100)     # clock never goes back
        assert r2.timestamp_ns == TS + 1
        assert r2.first_key_low == r.first_key_low + 3


def test_topic_ids_are_never_reused(store):
    a = store.create_topic("a")
    store.delete_topic("a")
    b = store.create_topic("a")
    assert b.id > a.id
    with pytest.raises(UnknownTopicError):
        store.topic("nope")
    with pytest.raises(ValueError, match="invalid topic name"):
        store.create_topic("bad/name")


def test_one_writer_at_a_time_and_readers_alongside(store, tmp_path):
    t = store.create_topic("t")
    t.append([b"live"])
    with pytest.raises(StoreLockedError, match=str(tmp_path / "data")):
        lance_store.open(tmp_path / "data")
    with lance_store.open(tmp_path / "data", readonly=True) as ro:
        assert [r.value for r in ro.topic("t").records()] == [b"live"]
        with pytest.raises(ReadOnlyError):
            ro.topic("t").append([b"no"])


def test_producer_sequences_survive_a_restart(store, tmp_path):
    t = store.create_topic("t")
    pid = store.new_producer_id()
    t.append([b"a"], producer_id=pid, producer_seq=1)
    t.append([b"b"], producer_id=pid, producer_seq=2)
    store.close()
    with lance_store.open(tmp_path / "data") as s2:
        assert s2.topic("t").producer_last_seq(pid) == 2
        assert s2.new_producer_id() > pid


def test_a_cluster_assigned_topic_id_is_kept_and_never_reused(store, tmp_path):
    a = store.create_topic("assigned", topic_id=42)
    assert a.id == 42
    b = store.create_topic("local")
    assert b.id == 43                              # the node's counter moved past it
    with pytest.raises(lance_store.TopicExistsError, match="id 42"):
        store.create_topic("other", topic_id=42)
    with pytest.raises(lance_store.TopicExistsError):
        store.create_topic("assigned", exist_ok=True, topic_id=7)
    assert store.create_topic("assigned", exist_ok=True, topic_id=42) is a
    store.close()
    with lance_store.open(tmp_path / "data") as s2:
        assert s2.topic("assigned").id == 42 and s2.create_topic("later").id == 44


def test_a_read_keeps_its_descriptor_while_a_seal_closes_the_segment(store, monkeypatch):
    """The segment is sealed (and its shared read descriptor retired) after read_raw let go of
    the topic's lock and before it reads: the read still reads that segment."""
    import threading

    from lance_store import topic as topic_module
    t = store.create_topic("sealing")
    first = t.append([b"x" * 100, b"y" * 100])
    real_read = topic_module.read_batches

    def seal_first(*args):
        sealer = threading.Thread(target=t.seal_active)
        sealer.start()
        sealer.join()
        return real_read(*args)

    monkeypatch.setattr(topic_module, "read_batches", seal_first)
    data, nxt, count = t.read_raw(0, 1 << 20)
    assert (nxt, count) == (first.next_offset, 2)
    assert len(t.segments) == 2 and t.segments[0].name.sealed
