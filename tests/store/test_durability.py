"""The three durability modes: sync, wal (acknowledged once the WAL entry is
durable) and async (acknowledged after the write, synced on an interval)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import lance_store
from lance_store import StoreConfig
from lance_store.segment import naming


def _active(path):
    folder = os.path.join(path, "segments", "t")
    (name,) = [n for n in map(naming.parse, os.listdir(folder)) if n and not n.sealed]
    return os.path.join(folder, name.filename)


@pytest.mark.parametrize("mode", ["sync", "wal", "async"])
def test_every_mode_reads_back_after_a_clean_close(tmp_path, mode):
    cfg = StoreConfig(durability=mode, segment_max_bytes=16 << 10, sync_interval_ms=10)
    with lance_store.open(tmp_path / "d", create=True, config=cfg) as store:
        t = store.create_topic("t")
        results = [t.append([os.urandom(500)] * 3) for _ in range(30)]
        results += t.append_many([[b"a"], [b"b"] * 2])
    with lance_store.open(tmp_path / "d", config=cfg) as store:
        t = store.topic("t")
        assert t.high_watermark == results[-1].next_offset
        assert len(list(t.records())) == 30 * 3 + 3


def test_wal_replays_batches_the_segment_lost(tmp_path):
    """Between the WAL write and the segment write: the segment lacks the tail,
    the WAL holds it, and replay puts it back."""
    cfg = StoreConfig(durability="wal")
    path = tmp_path / "d"
    with lance_store.open(path, create=True, config=cfg) as store:
        t = store.create_topic("t")
        first = t.append([b"durable in the segment"])
        t.sync()
        lost = [t.append([b"only in the wal %d" % i]) for i in range(5)]
    # Cut the segment back as if its unsynced writes never reached the disk.
    with open(_active(path), "r+b") as f:
        f.truncate(first.next_offset)
    with lance_store.open(path, config=cfg) as store:
        t = store.topic("t")
        assert t.high_watermark == lost[-1].next_offset
        assert [r.value for r in t.records()][1:] == [b"only in the wal %d" % i for i in range(5)]


def test_wal_replay_stops_at_a_torn_entry(tmp_path):
    cfg = StoreConfig(durability="wal")
    path = tmp_path / "d"
    with lance_store.open(path, create=True, config=cfg) as store:
        t = store.create_topic("t")
        keep = t.append([b"kept"])
        t.sync()
        t.append([b"torn"])
    wal_dir = path / "wal"
    newest = sorted(wal_dir.iterdir())[-1]
    data = bytearray(newest.read_bytes())
    # flip a byte of the last entry's batch: its CRC no longer matches
    pos = data.rfind(b"torn")
    data[pos] ^= 0xFF
    newest.write_bytes(bytes(data))
    with open(_active(path), "r+b") as f:
        f.truncate(keep.next_offset)
    with lance_store.open(path, config=cfg) as store:
        assert store.topic("t").high_watermark == keep.next_offset


WRITER = textwrap.dedent("""
    import sys, lance_store
    from lance_store import StoreConfig
    cfg = StoreConfig(durability=sys.argv[2], segment_max_bytes=64 << 10)
    store = lance_store.open(sys.argv[1], create=True, config=cfg)
    t = store.create_topic("t", exist_ok=True)
    i = 0
    while True:
        r = t.append([b"%08d" % i] * 10)
        print(r.offset, r.next_offset, i, flush=True)
        i += 1
""")


@pytest.mark.parametrize("mode", ["sync", "wal"])
def test_sigkill_loses_no_acknowledged_batch(tmp_path, mode):
    path = str(tmp_path / "d")
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path, mode], stdout=subprocess.PIPE, text=True)
        acked = []
        deadline = time.monotonic() + 30
        while len(acked) < 50 + round_ * 37 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(tuple(map(int, line.split())))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(acked) >= 50
        with lance_store.open(path, config=StoreConfig(durability=mode)) as store:
            t = store.topic("t")
            batches = {b.offset: b for b in _all_batches(t)}
            for off, nxt, i in acked:
                assert off in batches, f"acknowledged batch {i} at {off} lost"
                assert batches[off].header.end_offset == nxt


def _all_batches(topic):
    off = topic.low_watermark
    while off < topic.high_watermark:
        batches, off = topic.read(off, 1 << 20)
        yield from batches
