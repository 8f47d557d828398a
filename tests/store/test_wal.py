"""The write-ahead log: the entry vector, group commit, replay rules, crashes at every
stage (simulated by cutting and flipping bytes of WAL files), and file reuse."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import crc32c
import pytest

from lance_store.records import RAW, encode
from lance_store.segment.header import encode_batch
from lance_store.segment.writer import SegmentWriter
from lance_store.uring import PwritevBackend, select_backend
from lance_store.uring.backend import BLOCK, BufferPool
from lance_store.wal import (ENTRY, ENTRY_HEADER, Wal, WalReplayError, encode_entry,
                             list_wal_files, replay, wal_filename)

SPEC = Path(__file__).resolve().parents[2] / "spec"
VECTORS = json.loads((SPEC / "format_vectors.json").read_text())
TS = 1706918400000000000
SMALL_WAL = 4 * BLOCK


def make_batches(count: int, *, start: int = 0, size: int = 40, tag: int = 0) -> list:
    """`count` valid batches laid end to end from offset `start`: [(base_offset, bytes)]."""
    out = []
    base = start
    for i in range(count):
        payload, n = encode([(RAW, bytes([(tag + i) % 256]) * (size + i % 7))])
        header, _ = encode_batch(payload, n, base_offset=base, first_timestamp_ns=TS + i,
                                 first_key_low=i)
        out.append((base, header + payload))
        base += len(header) + len(payload)
    return out


class Segments:
    """What replay appends, per topic; checks that every append lands at the end."""

    def __init__(self, ends: dict | None = None):
        self.data: dict[int, bytearray] = {}
        self.calls: list = []
        for topic, end in (ends or {}).items():
            self.data[topic] = bytearray(end)

    def ends(self) -> dict:
        return {t: len(d) for t, d in self.data.items()}

    def apply(self, topic_id: int, base_offset: int, batch: bytes) -> None:
        assert base_offset == len(self.data[topic_id])
        self.data[topic_id] += batch
        self.calls.append((topic_id, base_offset))


@pytest.fixture(params=["uring", "pwritev"])
def backend(request):
    backend = select_backend(request.param)
    yield backend
    backend.close()


@pytest.fixture
def pool():
    # Small, so that bigger groups stream through several writes.
    return BufferPool(2, 16 * BLOCK)


@pytest.fixture
def wal_dir(tmp_path) -> Path:
    return tmp_path / "data" / "wal"


def crashed_copy(wal_dir: Path, dest: Path, edit=None) -> Path:
    """A copy of the log as a crash could leave it; `edit(seq, bytearray)` changes a file."""
    shutil.copytree(wal_dir, dest)
    if edit is not None:
        for seq, path in list_wal_files(dest):
            data = bytearray(path.read_bytes())
            edit(seq, data)
            path.write_bytes(bytes(data))
    return dest


# the entry ------------------------------------------------------------------------

def test_entry_matches_format_vector():
    batch = bytes.fromhex(VECTORS["batch_1"]["hex"])
    assert encode_entry(1, 1, 0, batch) == bytes.fromhex(VECTORS["wal_entry"]["hex"])
    # The seed is the file's seq: the same entry in another file has another CRC.
    assert encode_entry(2, 1, 0, batch)[4:8] != encode_entry(1, 1, 0, batch)[4:8]
    assert encode_entry(1, 1, 0, [batch[:77], batch[77:]]) == encode_entry(1, 1, 0, batch)


def test_a_new_log_writes_the_vector_then_pads_to_a_block(wal_dir, backend, pool):
    batch = bytes.fromhex(VECTORS["batch_1"]["hex"])
    wal = Wal(wal_dir, wal_size=SMALL_WAL, backend=backend, pool=pool)
    try:
        assert wal.active_seq == 1
        assert wal.append([(1, 0, batch)]) == BLOCK
        assert wal.position == BLOCK
    finally:
        wal.close()
    data = (wal_dir / wal_filename(1)).read_bytes()
    assert len(data) == SMALL_WAL
    entry = bytes.fromhex(VECTORS["wal_entry"]["hex"])
    assert data[: len(entry)] == entry
    length, crc, topic_id, base = ENTRY.unpack_from(data, len(entry))
    assert (topic_id, base) == (0, 0)
    assert len(entry) + ENTRY_HEADER + length == BLOCK
    assert crc == crc32c.crc32c(data[len(entry) + 8: BLOCK], 1)
    assert data[len(entry) + ENTRY_HEADER: BLOCK] == bytes(length)


class CountingBackend(PwritevBackend):
    """The pwritev backend, counting the calls the log makes."""

    def __init__(self):
        super().__init__()
        self.writes: list = []
        self.syncs = 0

    def write(self, fd, offset, views, *, sync):
        self.writes.append((offset, sum(memoryview(v).nbytes for v in views), sync))
        super().write(fd, offset, views, sync=sync)

    def sync(self, fd):
        self.syncs += 1
        super().sync(fd)


def test_group_commit_is_one_write_with_one_sync(wal_dir):
    backend = CountingBackend()
    wal = Wal(wal_dir, backend=backend, pool=BufferPool(2, 64 * BLOCK))
    try:
        entries = [(1 + i % 3, base, batch) for i, (base, batch) in enumerate(make_batches(50))]
        grown = wal.append(entries)
        assert backend.writes == [(0, grown, True)]
        # A group bigger than a pooled buffer streams through it; only the last write syncs.
        wal.append([(1, 0, bytes(300 * 1024))])
        tail = backend.writes[1:]
        assert [sync for _, _, sync in tail] == [False] * (len(tail) - 1) + [True]
        assert sum(n for _, n, _ in tail) == wal.position - grown
        assert backend.syncs == 0
    finally:
        wal.close()
        backend.close()


# replay rules ---------------------------------------------------------------------

def test_replay_applies_every_entry_in_order(wal_dir, backend, pool):
    topic_1, topic_2 = make_batches(9, tag=1), make_batches(9, tag=100)
    wal = Wal(wal_dir, wal_size=16 * BLOCK, backend=backend, pool=pool)
    try:
        for i in range(0, 9, 3):
            wal.append([(1, b, d) for b, d in topic_1[i:i + 3]] +
                       [(2, b, d) for b, d in topic_2[i:i + 3]])
        active, position = wal.active_seq, wal.position
    finally:
        wal.close()
    segments = Segments({1: 0, 2: 0})
    report = replay(wal_dir, {1: 0, 2: 0}, segments.apply)
    assert bytes(segments.data[1]) == b"".join(d for _, d in topic_1)
    assert bytes(segments.data[2]) == b"".join(d for _, d in topic_2)
    assert report.applied == 18 and report.skipped == 0
    assert report.ends == segments.ends()
    # What follows the last group in a fresh, preallocated file is zeros: a bad CRC.
    assert report.stopped_at == (active, position)
    assert "CRC" in report.reason


def test_replay_skips_durable_entries_and_unknown_topics(wal_dir, backend, pool):
    batches = make_batches(6)
    wal = Wal(wal_dir, wal_size=16 * BLOCK, backend=backend, pool=pool)
    try:
        wal.append([(1, b, d) for b, d in batches[:3]] + [(7, 0, b"gone")])
        wal.append([(1, b, d) for b, d in batches[3:]])
    finally:
        wal.close()
    recovered = batches[4][0]  # the segment kept the first four batches
    segments = Segments({1: recovered})
    report = replay(wal_dir, {1: recovered}, segments.apply)
    assert segments.calls == [(1, batches[4][0]), (1, batches[5][0])]
    assert report.applied == 2
    assert report.skipped == 5  # four durable batches and topic 7, which no longer exists
    assert report.ends == {1: batches[5][0] + len(batches[5][1])}


def test_replay_gap_names_the_topic_and_both_offsets(wal_dir, pool):
    batches = make_batches(3)
    wal = Wal(wal_dir, wal_size=16 * BLOCK, pool=pool)
    try:
        wal.append([(3, b, d) for b, d in batches[1:]])
    finally:
        wal.close()
    segments = Segments({3: 0})
    with pytest.raises(WalReplayError) as caught:
        replay(wal_dir, {3: 0}, segments.apply)
    message = str(caught.value)
    assert "topic 3" in message and f"offset {batches[1][0]}" in message
    assert "recovered end 0" in message and "gap" in message
    assert wal_filename(1) in message
    found = (caught.value.topic_id, caught.value.expected, caught.value.found)
    assert found == (3, 0, batches[1][0])
    assert segments.calls == []


def test_replay_refuses_an_entry_straddling_the_recovered_end(wal_dir, pool):
    batches = make_batches(2)
    wal = Wal(wal_dir, wal_size=16 * BLOCK, pool=pool)
    try:
        wal.append([(1, b, d) for b, d in batches])
    finally:
        wal.close()
    with pytest.raises(WalReplayError, match="straddles") as caught:
        replay(wal_dir, {1: 10}, Segments({1: 10}).apply)
    assert (caught.value.topic_id, caught.value.expected, caught.value.found) == (1, 10, 0)


def test_replay_of_a_missing_or_empty_folder(tmp_path):
    assert replay(tmp_path / "nowhere", {1: 5}, Segments().apply).ends == {1: 5}
    (tmp_path / "wal").mkdir()
    report = replay(tmp_path / "wal", {}, Segments().apply)
    assert report.files == [] and report.applied == 0


# crashes --------------------------------------------------------------------------

def _three_groups(wal_dir, backend, pool):
    """Groups A, B, C of topic 1 in one file; returns (batches per group, byte spans)."""
    groups = [make_batches(3, size=900), None, None]
    groups[1] = make_batches(3, start=groups[0][-1][0] + len(groups[0][-1][1]), size=1500, tag=50)
    groups[2] = make_batches(2, start=groups[1][-1][0] + len(groups[1][-1][1]), tag=90)
    spans = []
    wal = Wal(wal_dir, wal_size=16 * BLOCK, backend=backend, pool=pool)
    try:
        for group in groups:
            start = wal.position
            wal.append([(1, b, d) for b, d in group])
            spans.append((start, wal.position))
    finally:
        wal.close()
    return groups, spans


def test_torn_append_replays_a_prefix_never_what_follows_the_tear(wal_dir, backend, pool, tmp_path):
    """Group B is torn (the sectors from `cut` on never reached the disk and still hold
    an earlier use's bytes) while C, written after it, is intact: replay must stop
    inside B, whatever the cut."""
    groups, spans = _three_groups(wal_dir, backend, pool)
    b_start, b_end = spans[1]
    everything = [base for group in groups for base, _ in group]
    for cut in range(b_start, b_end, 512):
        def tear(seq, data, cut=cut):
            data[cut:b_end] = b"\xa5" * (b_end - cut)
        copy = crashed_copy(wal_dir, tmp_path / f"cut-{cut}", tear)
        segments = Segments({1: 0})
        report = replay(copy, {1: 0}, segments.apply)
        applied = [base for _, base in segments.calls]
        assert applied == everything[: len(applied)]
        assert len(groups[0]) <= len(applied) <= len(groups[0]) + len(groups[1])
        assert report.stopped_at[1] < b_end


def test_a_flipped_byte_stops_replay_at_its_entry(wal_dir, backend, pool, tmp_path):
    batches = make_batches(6, size=300)
    wal = Wal(wal_dir, wal_size=16 * BLOCK, backend=backend, pool=pool)
    try:
        wal.append([(1, b, d) for b, d in batches])
    finally:
        wal.close()
    positions = []
    pos = 0
    for _, data in batches:
        positions.append(pos)
        pos += ENTRY_HEADER + len(data)
    for k, entry_pos in enumerate(positions):
        for field_offset in (0, 5, 9, 13, ENTRY_HEADER + 40):  # length, crc, topic, offset, batch
            def flip(seq, data, at=entry_pos + field_offset):
                data[at] ^= 0x10
            copy = crashed_copy(wal_dir, tmp_path / f"flip-{k}-{field_offset}", flip)
            segments = Segments({1: 0})
            report = replay(copy, {1: 0}, segments.apply)
            assert [base for _, base in segments.calls] == [b for b, _ in batches[:k]]
            assert report.stopped_at == (1, entry_pos)


def test_crash_between_wal_and_segment_is_completed_by_replay(tmp_path, backend):
    """The WAL entries are durable, the segment lost its unsynced tail: replay puts
    back exactly the lost batches, through the segment writer."""
    pool = BufferPool(2, 16 * BLOCK)
    batches = make_batches(8, size=700)
    wal = Wal(tmp_path / "wal", wal_size=16 * BLOCK, backend=backend, pool=pool)
    segment_path = tmp_path / "00000000000000000000_1.lnc"
    writer = SegmentWriter(segment_path, 0, backend, pool, create=True)
    try:
        for base, data in batches:
            wal.append([(1, base, data)])
            writer.write([data], sync=False)
    finally:
        writer.close()
        wal.close()
    full = segment_path.read_bytes()
    for kept in (0, 3, 8):
        cut = batches[kept][0] if kept < len(batches) else len(full)
        with open(segment_path, "r+b") as f:
            f.truncate(cut)
        writer = SegmentWriter(segment_path, cut, backend, pool)
        try:
            applied = []

            def apply(topic_id, base_offset, batch):
                applied.append(base_offset)
                writer.write([batch], sync=False)

            report = replay(tmp_path / "wal", {1: cut}, apply)
            writer.sync()
        finally:
            writer.close()
        assert applied == [b for b, _ in batches[kept:]]
        assert report.skipped == kept
        assert segment_path.read_bytes() == full


def test_a_torn_closing_padding_stops_replay_in_that_file(wal_dir, backend, pool, tmp_path):
    batches = make_batches(3, size=2000)
    batches += make_batches(1, start=batches[-1][0] + len(batches[-1][1]), size=5000)
    wal = Wal(wal_dir, wal_size=SMALL_WAL, backend=backend, pool=pool)
    try:
        for base, data in batches:
            wal.append([(1, base, data)])
        # The last batch needs two blocks; one was left, so file 1 was closed.
        assert [seq for seq, _ in wal.files()] == [1, 2]
    finally:
        wal.close()
    # File 1 holds three batches and the padding that closes it at 3 blocks.
    def tear(seq, data):
        if seq == 1:
            data[3 * BLOCK: 3 * BLOCK + 512] = bytes(512)
    copy = crashed_copy(wal_dir, tmp_path / "torn-close", tear)
    segments = Segments({1: 0})
    report = replay(copy, {1: 0}, segments.apply)
    assert [b for _, b in segments.calls] == [b for b, _ in batches[:3]]
    assert report.stopped_at == (1, 3 * BLOCK)


def test_reopening_after_a_tear_never_resurrects_what_followed_it(wal_dir, backend, pool):
    groups, spans = _three_groups(wal_dir, backend, pool)
    b_start, b_end = spans[1]
    path = wal_dir / wal_filename(1)
    data = bytearray(path.read_bytes())
    data[b_start + 512: b_end] = b"\xa5" * (b_end - b_start - 512)  # B torn, C intact
    path.write_bytes(bytes(data))

    segments = Segments({1: 0})
    replay(wal_dir, {1: 0}, segments.apply)
    end = len(segments.data[1])
    assert end == groups[1][0][0]  # A replayed; B's first sector held no whole entry
    wal = Wal(wal_dir, wal_size=16 * BLOCK, backend=backend, pool=pool)
    try:
        assert wal.active_seq == 2 and wal.files() == [(2, wal_dir / wal_filename(2))]
        d = make_batches(2, start=end, tag=200)
        wal.append([(1, b, x) for b, x in d])
    finally:
        wal.close()
    # The same file, renamed: its old bytes (C among them) fail under the new seed.
    assert list_wal_files(wal_dir) == [(2, wal_dir / wal_filename(2))]
    again = Segments({1: end})
    report = replay(wal_dir, {1: end}, again.apply)
    assert again.calls == [(1, b) for b, _ in d]
    assert report.stopped_at == (2, BLOCK)


# reuse ---------------------------------------------------------------------------

def test_a_file_is_reused_only_once_its_batches_are_durable(wal_dir, backend, pool):
    batches = make_batches(13, size=100)
    wal = Wal(wal_dir, wal_size=SMALL_WAL, backend=backend, pool=pool)
    try:
        for base, data in batches[:5]:
            wal.append([(1, base, data)])
        # File 1 is full and nothing is durable: a new file was created.
        assert [seq for seq, _ in wal.files()] == [1, 2]
        first_inode = (wal_dir / wal_filename(1)).stat().st_ino
        wal.mark_durable(1, batches[3][0])  # not yet the end of file 1's last batch
        for base, data in batches[5:9]:
            wal.append([(1, base, data)])
        assert [seq for seq, _ in wal.files()] == [1, 2, 3]
        wal.mark_durable(1, batches[4][0])  # now everything in file 1 is durable
        for base, data in batches[9:]:
            wal.append([(1, base, data)])
        assert [seq for seq, _ in wal.files()] == [2, 3, 4]
        # Reuse is a rename of the same file, not a new one.
        assert (wal_dir / wal_filename(4)).stat().st_ino == first_inode
        assert not (wal_dir / wal_filename(1)).exists()
    finally:
        wal.close()
    segments = Segments({1: batches[4][0]})
    replay(wal_dir, {1: batches[4][0]}, segments.apply)
    assert [b for _, b in segments.calls] == [b for b, _ in batches[4:]]


def test_recycled_files_never_replay_stale_entries(wal_dir, backend, pool, tmp_path):
    """Every append is its own topic (ids 1..N, each batch at offset 0), so replay with
    every end at 0 applies every entry it accepts: the accepted ids must be one
    unbroken run up to the newest, with nothing stale inside it."""
    n = 40
    wal = Wal(wal_dir, wal_size=SMALL_WAL, backend=backend, pool=pool, keep_files=2)
    try:
        sizes = {}
        for topic in range(1, n + 1):
            _, batch = make_batches(1, size=200 + topic, tag=topic)[0]
            wal.append([(topic, 0, batch)])
            sizes[topic] = len(batch)
            if topic > 5:  # segments become durable five batches behind the log
                wal.mark_durable(topic - 5, sizes[topic - 5])
        files = wal.files()
    finally:
        wal.close()
    # Ten files' worth of entries went through at most three files.
    assert files[-1][0] == 10 and 2 <= len(files) <= 3

    def accepted(directory) -> list:
        topics = {t: 0 for t in range(1, n + 2)}
        segments = Segments(topics)
        replay(directory, topics, segments.apply)
        return [t for t, _ in segments.calls]

    run = accepted(wal_dir)
    assert run == list(range(run[0], n + 1)) and run[0] <= n - 4

    # A crash right after a rename, before the first write to the renamed file:
    # simulated by renaming the oldest file past the newest, as reuse does.
    oldest_seq, oldest = files[0]
    stale = crashed_copy(wal_dir, tmp_path / "renamed")
    os.rename(stale / oldest.name, stale / wal_filename(files[-1][0] + 1))
    renamed_run = accepted(stale)
    assert renamed_run == list(range(renamed_run[0], n + 1))
    assert set(renamed_run) <= set(run)

    # And one after a first, torn write into the renamed file.
    def torn_first_write(seq, data):
        if seq == files[-1][0] + 1:
            _, batch = make_batches(1, size=300, tag=n + 1)[0]
            entry = encode_entry(seq, n + 1, 0, batch)
            data[: len(entry)] = entry
            data[len(entry): len(entry) + 64] = bytes(64)  # its padding never landed
    torn = crashed_copy(stale, tmp_path / "torn", torn_first_write)
    torn_run = accepted(torn)
    assert torn_run == list(range(torn_run[0], n + 2))


def test_a_group_larger_than_what_is_left_continues_in_the_next_file(wal_dir, backend, pool):
    first = make_batches(2, size=500)
    rest = make_batches(10, start=first[-1][0] + len(first[-1][1]), size=1400, tag=9)
    wal = Wal(wal_dir, wal_size=SMALL_WAL, backend=backend, pool=pool)
    try:
        wal.append([(1, b, d) for b, d in first])
        wal.append([(1, b, d) for b, d in rest])
        seqs = [seq for seq, _ in wal.files()]
    finally:
        wal.close()
    assert seqs[0] == 1 and len(seqs) >= 2
    # File 1 is valid to its very end: its last entry is padding up to SMALL_WAL.
    data = (wal_dir / wal_filename(1)).read_bytes()
    pos = 0
    while pos < SMALL_WAL:
        length, crc, topic_id, base = ENTRY.unpack_from(data, pos)
        assert crc == crc32c.crc32c(data[pos + 8: pos + ENTRY_HEADER + length], 1)
        last_topic = topic_id
        pos += ENTRY_HEADER + length
    assert pos == SMALL_WAL and last_topic == 0
    segments = Segments({1: 0})
    replay(wal_dir, {1: 0}, segments.apply)
    assert [b for _, b in segments.calls] == [b for b, _ in first + rest]


def test_unsynced_appends_become_durable_with_sync(wal_dir, backend, pool):
    batches = make_batches(3)
    wal = Wal(wal_dir, wal_size=SMALL_WAL, backend=backend, pool=pool)
    try:
        for base, data in batches:
            wal.append([(1, base, data)], sync=False)
        wal.sync()
    finally:
        wal.close()
    segments = Segments({1: 0})
    replay(wal_dir, {1: 0}, segments.apply)
    assert [b for _, b in segments.calls] == [b for b, _ in batches]


def test_a_deleted_topic_does_not_pin_its_files(wal_dir, backend, pool):
    wal = Wal(wal_dir, wal_size=SMALL_WAL, backend=backend, pool=pool, keep_files=1)
    try:
        for i in range(4):
            wal.append([(5, i * 1000, bytes(1000))])
        wal.forget_topic(5)
        wal.append([(6, 0, bytes(10))])
        assert [seq for seq, _ in wal.files()] == [2]
    finally:
        wal.close()


def test_opening_drops_files_of_another_size(wal_dir, pool):
    wal = Wal(wal_dir, wal_size=SMALL_WAL, pool=pool)
    wal.append([(1, 0, b"x" * 100)])
    wal.close()
    wal = Wal(wal_dir, wal_size=2 * SMALL_WAL, pool=pool)
    try:
        assert wal.files() == [(2, wal_dir / wal_filename(2))]
        assert (wal_dir / wal_filename(2)).stat().st_size == 2 * SMALL_WAL
    finally:
        wal.close()


def test_refusals_name_what_is_wrong(wal_dir, pool):
    with pytest.raises(ValueError, match="wal_size 5000"):
        Wal(wal_dir, wal_size=5000, pool=pool)
    wal = Wal(wal_dir, wal_size=SMALL_WAL, pool=pool)
    try:
        with pytest.raises(ValueError, match="topic_id 0"):
            wal.append([(0, 0, b"x")])
        with pytest.raises(ValueError, match=f"topic 2: batch at offset 7 of {SMALL_WAL} bytes"):
            wal.append([(2, 7, bytes(SMALL_WAL))])
        assert wal.position == 0
    finally:
        wal.close()
    with pytest.raises(ValueError, match="closed"):
        wal.append([(1, 0, b"x")])
