"""Recovery when a store opens (FORMAT.md section 8): interrupted seals, leftover and
damaged index files, missing metadata, foreign files, the writer's lock, and the rule
that a read-only open never writes."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import lance_store
from lance_store import StoreConfig, StoreLockedError
from lance_store.index.sparse import ENTRY_DTYPE
from lance_store.repair import reindex_path
from lance_store.segment import naming
from lance_store.segment.header import BATCH_OVERHEAD
from lance_store.verify import DAMAGE, WARNING, verify_path

TS = 1_700_000_000_000_000_000
CONFIG = StoreConfig(segment_max_bytes=1 << 20)
PRODUCER = 3


def batch_values(i: int) -> list[bytes]:
    return [(b"record %d.%d " % (i, k)) * 9 for k in range(3)]


def build(path, groups: list[int]) -> list[tuple[int, int, list[bytes]]]:
    """Topic `t`: one sealed segment per entry of GROUPS (that many batches each) but
    the last, which stays active. Returns (offset, end, values) of every batch."""
    batches, i = [], 0
    with lance_store.open(path, create=True, node_id=1, config=CONFIG) as store:
        t = store.create_topic("t")
        for g, count in enumerate(groups):
            for _ in range(count):
                r = t.append(batch_values(i), timestamp_ns=TS + i, producer_id=PRODUCER, producer_seq=i)
                batches.append((r.offset, r.next_offset, batch_values(i)))
                i += 1
            if g < len(groups) - 1:
                t.seal_active()
    return batches


def folder(path) -> str:
    return os.path.join(path, "segments", "t")


def segments(path) -> list[naming.SegmentName]:
    return sorted((n for n in map(naming.parse, os.listdir(folder(path))) if n), key=lambda n: n.base)


def expected_records(batches) -> list[tuple[int, bytes]]:
    out = []
    for offset, _end, values in batches:
        pos = offset + BATCH_OVERHEAD
        for v in values:
            out.append((pos, v))
            pos += 5 + len(v)
    return out


def assert_serves(store, batches) -> None:
    """Every batch readable at its offset and found by its time (both through the
    index), every record by scan, and the producer's last sequence number known."""
    t = store.topic("t")
    assert (t.low_watermark, t.high_watermark) == (batches[0][0], batches[-1][1])
    assert t.producer_last_seq(PRODUCER) == len(batches) - 1
    assert [(r.offset, r.value) for r in t.records()] == expected_records(batches)
    for i, (offset, end, values) in enumerate(batches):
        got, nxt = t.read(offset, max_bytes=1)
        assert [(b.offset, b.header.record_count) for b in got] == [(offset, len(values))] and nxt == end
        assert t.offset_for_time(TS + i) == offset


def undo_last_seal(path, *, keep_next: bool, index: str = "sealed") -> tuple[str, str]:
    """Put a folder whose last segment was just sealed into the state a crash in the
    middle of that seal leaves. INDEX: "sealed" (renamed into place), "tmp" (not yet
    renamed). Returns (the segment's active path, its index path)."""
    names = segments(path)
    sealed, nxt = names[-2], names[-1]
    assert sealed.sealed and not nxt.sealed and os.path.getsize(os.path.join(folder(path), nxt.filename)) == 0
    active = naming.active(sealed.base, sealed.t0)
    seg_path = os.path.join(folder(path), active.filename)
    os.rename(os.path.join(folder(path), sealed.filename), seg_path)
    idx_path = os.path.join(folder(path), sealed.index_filename)
    if index == "tmp":
        os.rename(idx_path, idx_path + ".tmp")
        idx_path += ".tmp"
    if not keep_next:
        os.unlink(os.path.join(folder(path), nxt.filename))
    return seg_path, idx_path


# ---- interrupted seals -----------------------------------------------------------------

def test_two_active_segments_complete_the_interrupted_seal(data_dir, tree_state):
    batches = build(data_dir, [12, 30, 0])
    seg_path, _ = undo_last_seal(data_dir, keep_next=True)
    report = verify_path(data_dir)
    assert any(f.severity == WARNING and "2 active segments" in f.what for f in report.findings)

    before = tree_state(data_dir)
    with lance_store.open(data_dir, readonly=True) as store:
        assert_serves(store, batches)
    assert tree_state(data_dir) == before

    with lance_store.open(data_dir, config=CONFIG) as store:
        assert any("completed an interrupted seal" in w and seg_path in w for w in store.warnings)
        assert_serves(store, batches)
        r = store.topic("t").append([b"after recovery"])
        assert r.offset == batches[-1][1]
    names = segments(data_dir)
    assert [n.sealed for n in names] == [True, True, False]
    assert not os.path.exists(seg_path)
    indexes = sorted(f for f in os.listdir(folder(data_dir)) if f.endswith(naming.INDEX_SUFFIX))
    assert indexes == [n.index_filename for n in names if n.sealed]      # no orphan left behind
    assert verify_path(data_dir).findings == []


def test_index_of_a_seal_that_never_renamed_its_segment_is_removed(data_dir, tree_state):
    batches = build(data_dir, [12, 30, 0])
    seg_path, idx_path = undo_last_seal(data_dir, keep_next=False)
    before = tree_state(data_dir)
    with lance_store.open(data_dir, readonly=True) as store:
        assert_serves(store, batches)
    assert tree_state(data_dir) == before

    with lance_store.open(data_dir, config=CONFIG) as store:
        assert_serves(store, batches)
        assert store.topic("t").active.path == seg_path     # still the active segment
        r = store.topic("t").append([b"more"])
        assert r.offset == batches[-1][1]
    assert not os.path.exists(idx_path)
    assert [n.sealed for n in segments(data_dir)] == [True, False]
    assert verify_path(data_dir).findings == []


def test_index_named_like_the_active_segment_is_removed(data_dir):
    batches = build(data_dir, [5, 8])
    active = segments(data_dir)[-1]
    stray = os.path.join(folder(data_dir), active.index_filename)
    with open(stray, "wb") as f:
        f.write(np.zeros(2, dtype=ENTRY_DTYPE).tobytes())
    with lance_store.open(data_dir, config=CONFIG) as store:
        assert_serves(store, batches)
    assert not os.path.exists(stray)


def test_leftover_tmp_files_are_removed(data_dir, tree_state):
    batches = build(data_dir, [12, 30, 0])
    seg_path, idx_tmp = undo_last_seal(data_dir, keep_next=False, index="tmp")
    meta_tmp = os.path.join(folder(data_dir), "metadata.json.tmp")
    with open(meta_tmp, "w") as f:
        f.write('{"format": 1, "na')          # a metadata write that never reached its rename
    before = tree_state(data_dir)
    with lance_store.open(data_dir, readonly=True) as store:
        assert_serves(store, batches)
    assert tree_state(data_dir) == before

    with lance_store.open(data_dir, config=CONFIG) as store:
        assert_serves(store, batches)
        assert store.topic("t").info()["retention"] == {"max_age_secs": 0, "max_bytes": 0}
    assert not os.path.exists(idx_tmp) and not os.path.exists(meta_tmp)
    assert verify_path(data_dir).findings == []


# ---- damaged indexes -------------------------------------------------------------------

def sealed_index(path) -> str:
    (sealed,) = [n for n in segments(path) if n.sealed]
    return os.path.join(folder(path), sealed.index_filename)


@pytest.mark.parametrize("size", [0, 30, 48 + 7])
def test_truncated_index(data_dir, size):
    batches = build(data_dir, [40, 5])
    idx = sealed_index(data_dir)
    good = open(idx, "rb").read()
    assert len(good) >= 3 * 24                       # several entries to lose
    os.truncate(idx, size)
    report = verify_path(data_dir)
    assert [f.path for f in report.findings if f.severity == DAMAGE] == [idx]

    with lance_store.open(data_dir, readonly=True) as store:
        assert_serves(store, batches)
    assert os.path.getsize(idx) == size
    with lance_store.open(data_dir, config=CONFIG) as store:
        assert_serves(store, batches)
    reindex_path(str(data_dir))
    assert open(idx, "rb").read() == good
    assert verify_path(data_dir).findings == []


def test_index_rebuilt_by_recovery_when_its_size_is_wrong(data_dir):
    batches = build(data_dir, [40, 5])
    idx = sealed_index(data_dir)
    good = open(idx, "rb").read()
    os.truncate(idx, 30)
    with lance_store.open(data_dir, config=CONFIG) as store:
        assert any(idx in w for w in store.warnings)
        assert_serves(store, batches)
    assert open(idx, "rb").read() == good


def test_index_pointing_inside_a_batch(data_dir, lance_store_cli):
    batches = build(data_dir, [40, 5])
    idx = sealed_index(data_dir)
    good = open(idx, "rb").read()
    entries = np.frombuffer(good, dtype=ENTRY_DTYPE).copy()
    entries["offset"][1] += 20                        # inside the batch the entry named
    with open(idx, "wb") as f:
        f.write(entries.tobytes())

    report = verify_path(data_dir)
    (finding,) = [f for f in report.findings if f.severity == DAMAGE]
    assert finding.path == idx and finding.offset == int(entries["offset"][1])
    for readonly in (True, False):
        with lance_store.open(data_dir, readonly=readonly, config=CONFIG) as store:
            assert_serves(store, batches)
    proc = lance_store_cli("reindex", data_dir)
    assert proc.returncode == 0, proc.stderr
    assert idx in proc.stdout
    assert open(idx, "rb").read() == good
    assert verify_path(data_dir).findings == []


# ---- metadata and foreign files --------------------------------------------------------

def test_missing_metadata_is_served_with_defaults(data_dir):
    batches = build(data_dir, [10, 3])
    meta = os.path.join(folder(data_dir), "metadata.json")
    os.unlink(meta)
    for readonly in (True, False):
        with lance_store.open(data_dir, readonly=readonly, config=CONFIG) as store:
            assert any(meta in w and "missing" in w for w in store.warnings)
            t = store.topic("t")
            assert t.retention == lance_store.Retention(0, 0)
            assert t.info()["topic_epoch"] == 1
            assert_serves(store, batches)
            if not readonly:
                assert t.append([b"still writable"]).offset == batches[-1][1]
    assert any(f.path == meta for f in verify_path(data_dir).findings)


def test_foreign_file_is_named_and_left_alone(data_dir):
    batches = build(data_dir, [10, 3])
    foreign = os.path.join(folder(data_dir), "notes.txt")
    with open(foreign, "w") as f:
        f.write("copied here by hand\n")
    for readonly in (True, False):
        with lance_store.open(data_dir, readonly=readonly, config=CONFIG) as store:
            assert [w for w in store.warnings if foreign in w]
            assert_serves(store, batches)
    assert open(foreign).read() == "copied here by hand\n"
    report = verify_path(data_dir)
    assert [(f.severity, f.path) for f in report.findings] == [(WARNING, foreign)]


# ---- the writer's lock -----------------------------------------------------------------

HOLDER = r"""
import sys
import lance_store
store = lance_store.open(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()          # until the test closes our stdin
store.close()
"""


def test_lock_held_by_another_process(data_dir):
    batches = build(data_dir, [4, 2])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        with pytest.raises(StoreLockedError, match=re.escape(str(data_dir))) as exc:
            lance_store.open(data_dir)
        assert f"pid {holder.pid}" in str(exc.value) and "readonly=True" in str(exc.value)
        with lance_store.open(data_dir, readonly=True) as store:
            assert_serves(store, batches)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert holder.returncode == 0
    with lance_store.open(data_dir, config=CONFIG) as store:     # free again
        assert_serves(store, batches)


# ---- a read-only open never writes -----------------------------------------------------

def _torn_tail(path):
    active = segments(path)[-1]
    with open(os.path.join(folder(path), active.filename), "ab") as f:
        f.write(b"\xfe\x48\x00\x00\x00LNCB" + bytes(30))


def _two_actives(path):
    undo_last_seal(path, keep_next=True)


def _leftover_index(path):
    undo_last_seal(path, keep_next=False)


def _leftover_tmp(path):
    undo_last_seal(path, keep_next=False, index="tmp")


def _missing_index(path):
    os.unlink(sealed_index(path))


def _truncated_index(path):
    os.truncate(sealed_index(path), 30)


def _missing_metadata(path):
    os.unlink(os.path.join(folder(path), "metadata.json"))


def _foreign_file(path):
    with open(os.path.join(folder(path), "README"), "w") as f:
        f.write("not a segment\n")


DAMAGE_KINDS = {
    "torn tail": (_torn_tail, [10, 3]), "two active segments": (_two_actives, [10, 0]),
    "leftover index": (_leftover_index, [10, 0]), "leftover tmp": (_leftover_tmp, [10, 0]),
    "missing index": (_missing_index, [10, 3]), "truncated index": (_truncated_index, [10, 3]),
    "missing metadata": (_missing_metadata, [10, 3]), "foreign file": (_foreign_file, [10, 3]),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE_KINDS))
def test_readonly_open_never_writes(data_dir, kind, tree_state):
    damage, groups = DAMAGE_KINDS[kind]
    batches = build(data_dir, groups)
    damage(data_dir)
    os.unlink(os.path.join(data_dir, ".lock"))
    before = tree_state(data_dir)
    dirs_before = sorted(p for p, _, _ in os.walk(data_dir))
    with lance_store.open(data_dir, readonly=True) as store:
        assert_serves(store, batches)
        with pytest.raises(lance_store.ReadOnlyError):
            store.topic("t").append([b"refused"])
    verify_path(data_dir)
    assert tree_state(data_dir) == before
    assert sorted(p for p, _, _ in os.walk(data_dir)) == dirs_before


def test_scanning_an_active_segment_while_a_seal_cuts_its_tail(tmp_path):
    """A read-only scan (ship, verify) of an active segment whose writer seals it meanwhile:
    the file loses its zero tail and trailing padding under the scan, which must end at the
    new end instead of touching pages past it (a mapped read there would be SIGBUS)."""
    from lance_store.records import padding
    from lance_store.segment.reader import scan_segment
    with lance_store.open(tmp_path / "d", create=True) as store:
        topic = store.create_topic("t")
        for i in range(40):
            topic.append([os.urandom(900)])
        path = topic.active.path
        batches_end = topic.active.size
    # What an active segment looks like between two pipelined groups: padding to a block
    # boundary, then the zero tail of the last O_DIRECT block.
    with open(path, "r+b") as f:
        f.truncate(batches_end)
        f.seek(batches_end)
        gap = -batches_end % 4096 or 4096
        f.write(padding(gap if gap >= 5 else gap + 4096) + bytes(3 * 4096))
    cut = []

    def seal_after_first_window(done_bytes):
        if not cut:
            os.truncate(path, batches_end)      # the seal: back to the last batch
            cut.append(done_bytes)

    scan = scan_segment(path, 0, window=4096, progress=seal_after_first_window)
    assert cut
    assert scan.valid_end == batches_end
    assert scan.error is None
    assert len(scan.batches.pos) == 40
