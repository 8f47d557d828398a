"""The optional write-ahead log (FORMAT.md section 7): appending, recycling and replaying wal/.

It owns the files under wal/ and nothing else: segments belong to their topics, so
replay hands each batch to a callback and appending learns of segment durability from
`mark_durable`.

Layout rules this module keeps, beyond the entry format:

- Every append ends on a 4 KiB boundary with a padding entry (topic_id 0), so each
  group is whole O_DIRECT blocks written once, never rewritten.
- A file is left only after a padding entry running to its very end is durable, so
  every file but the newest is valid from start to end; replay may therefore stop at
  the first bad entry anywhere and still has read every entry that was acknowledged.
- Opening a log renames its newest file to the next seq before writing: the torn or
  stale bytes a crash left after its last good entry then fail their CRC (the seed
  changed) and can never be followed by new entries.
"""
from __future__ import annotations

import os
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import crc32c

from .errors import CorruptionError
from .fsutil import fsync_dir
from .segment.writer import open_for_append
from .uring.backend import BLOCK, BufferPool, WriteBackend, align_up

DEFAULT_WAL_SIZE = 64 << 20
# length:u32 | crc:u32 | topic_id:u32 | base_offset:u64; the CRC covers bytes 8.. of the entry
ENTRY = struct.Struct("<IIIQ")
ENTRY_HEADER = ENTRY.size
_CRC_FIELDS = struct.Struct("<IQ")
PADDING_TOPIC = 0
MAX_TOPIC_ID = 0xFFFFFFFF
_NAME = re.compile(r"^(\d{16})\.wal$")
_ZEROS = bytes(1 << 16)


def wal_filename(seq: int) -> str:
    return f"{seq:016d}.wal"


def parse_wal_filename(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def list_wal_files(wal_dir) -> list[tuple[int, Path]]:
    """(seq, path) of every WAL file, oldest first; a missing folder has none."""
    wal_dir = Path(wal_dir)
    if not wal_dir.is_dir():
        return []
    found = []
    for entry in os.scandir(wal_dir):
        seq = parse_wal_filename(entry.name)
        if seq is not None and entry.is_file():
            found.append((seq, Path(entry.path)))
    return sorted(found)


def _seed(seq: int) -> int:
    return seq & 0xFFFFFFFF


def _zero_crc(crc: int, n: int) -> int:
    while n:
        step = min(n, len(_ZEROS))
        crc = crc32c.crc32c(_ZEROS[:step], crc)
        n -= step
    return crc


def _pieces(batch) -> list:
    """A batch given as one bytes-like object or as a list of them (header, payload)."""
    if isinstance(batch, (list, tuple)):
        return [memoryview(p).cast("B") for p in batch]
    return [memoryview(batch).cast("B")]


def encode_entry(seq: int, topic_id: int, base_offset: int, batch) -> bytes:
    """One WAL entry as it sits in file `seq` (a reference for tests and tools)."""
    pieces = _pieces(batch)
    header, _ = _entry_header(seq, topic_id, base_offset, pieces)
    return header + b"".join(bytes(p) for p in pieces)


def _entry_header(seq: int, topic_id: int, base_offset: int, pieces: list) -> tuple[bytes, int]:
    length = sum(len(p) for p in pieces)
    crc = crc32c.crc32c(_CRC_FIELDS.pack(topic_id, base_offset), _seed(seq))
    for piece in pieces:
        crc = crc32c.crc32c(piece, crc)
    return ENTRY.pack(length, crc, topic_id, base_offset), length


def _padding_header(seq: int, zeros: int) -> bytes:
    crc = _zero_crc(crc32c.crc32c(_CRC_FIELDS.pack(PADDING_TOPIC, 0), _seed(seq)), zeros)
    return ENTRY.pack(zeros, crc, PADDING_TOPIC, 0)


def padded_end(end: int) -> int:
    """Where a group ending at `end` stops once padded: the next 4 KiB boundary with
    room for a padding entry's header."""
    gap = align_up(end) - end
    if 0 < gap < ENTRY_HEADER:
        gap += BLOCK
    return end + gap


# replay ----------------------------------------------------------------------

class WalReplayError(CorruptionError):
    """A WAL entry that cannot follow its topic's recovered end: a gap, or a batch
    that straddles the end (the segment and the WAL disagree on batch boundaries)."""

    def __init__(self, path, position: int, topic_id: int, expected: int, found: int, what: str):
        super().__init__(path, position, f"topic {topic_id}: {what}", expected=expected,
                         found=found)
        self.topic_id = topic_id


@dataclass
class ReplayReport:
    ends: dict                      # topic_id -> end offset after replay
    applied: int = 0                # entries handed to `apply`
    skipped: int = 0                # entries already durable or of unknown topics
    files: list = field(default_factory=list)   # seqs read, in order
    stopped_at: tuple | None = None  # (seq, position) of the first bad entry, if any
    reason: str = ""                # why replay stopped there


def replay(wal_dir, known_topics: dict, apply: Callable[[int, int, bytes], None]) -> ReplayReport:
    """Replay the log into segments (FORMAT.md section 7).

    `known_topics` maps topic_id to the end offset its segment recovered to;
    `apply(topic_id, base_offset, batch_bytes)` must append the batch to that
    topic's segment. Files are read in seq order and entries in file order;
    replay stops at the first entry whose length or CRC is wrong. Raises
    WalReplayError on a gap. The caller syncs the segments it appended to
    before opening the log for writing again.
    """
    report = ReplayReport(ends=dict(known_topics))
    for seq, path in list_wal_files(wal_dir):
        report.files.append(seq)
        if not _replay_file(seq, path, report, apply):
            break
    return report


def _replay_file(seq: int, path: Path, report: ReplayReport, apply) -> bool:
    """Replay one file; False when replay must stop here."""
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    size = len(data)
    pos = 0
    seed = _seed(seq)
    while pos + ENTRY_HEADER <= size:
        length, crc, topic_id, base = ENTRY.unpack_from(data, pos)
        body_end = pos + ENTRY_HEADER + length
        if body_end > size:
            report.stopped_at, report.reason = (seq, pos), (
                f"entry length {length} runs past the end of the file ({size} bytes)")
            return False
        if crc32c.crc32c(view[pos + 8: body_end], seed) != crc:
            report.stopped_at, report.reason = (seq, pos), "entry CRC does not match"
            return False
        if topic_id != PADDING_TOPIC:
            _replay_entry(path, pos, topic_id, base, view[pos + ENTRY_HEADER: body_end], report,
                          apply)
        pos = body_end
    return True


def _replay_entry(path, pos: int, topic_id: int, base: int, batch, report, apply) -> None:
    end = report.ends.get(topic_id)
    if end is None or base + len(batch) <= end:
        report.skipped += 1
        return
    if base == end:
        apply(topic_id, base, bytes(batch))
        report.ends[topic_id] = base + len(batch)
        report.applied += 1
        return
    if base > end:
        raise WalReplayError(path, pos, topic_id, end, base,
                             f"WAL batch at offset {base} leaves a gap after the segment's"
                             f" recovered end {end}")
    raise WalReplayError(path, pos, topic_id, end, base,
                         f"WAL batch at offset {base} ({len(batch)} bytes) straddles the"
                         f" segment's recovered end {end}")


# appending ---------------------------------------------------------------------

class _WalFile:
    __slots__ = ("seq", "path", "holds")

    def __init__(self, seq: int, path: Path):
        self.seq = seq
        self.path = path
        self.holds: dict[int, int] = {}  # topic_id -> end offset of its last batch here


class Wal:
    """The log, open for appending. Open it only after `replay` has run and the
    segments it appended to are synced: every entry already in wal/ is then durable
    in its segment, and the files holding them are free for reuse.

    `append(entries, sync=True)` writes many batches with one write and one sync
    (group commit). Tell the log how far each topic's segment is durable with
    `mark_durable`; a file is reused (renamed to the next seq) only once every
    batch it holds is covered, and at most `keep_files` files are kept.
    """

    def __init__(self, wal_dir, *, wal_size: int = DEFAULT_WAL_SIZE,
                 backend: WriteBackend | None = None, pool: BufferPool | None = None,
                 keep_files: int = 4):
        if wal_size % BLOCK or wal_size < 2 * BLOCK:
            raise ValueError(f"wal_size {wal_size}: must be a multiple of {BLOCK},"
                             f" at least {2 * BLOCK}")
        if keep_files < 1:
            raise ValueError(f"keep_files {keep_files}: must be at least 1")
        self.dir = Path(wal_dir)
        self.wal_size = wal_size
        self.keep_files = keep_files
        self._own_backend = backend is None
        if backend is None:
            from .uring import select_backend
            backend = select_backend("auto")
        self.backend = backend
        self.pool = pool if pool is not None else BufferPool(2, 1 << 20)
        self._zeros = memoryview(bytes(self.pool.size))
        self._lock = threading.Lock()
        self._durable: dict[int, int] = {}
        self._files: list[_WalFile] = []   # oldest first; the last one is active
        self._fd = -1
        self._pos = 0
        self._open()

    # public API ----------------------------------------------------------------

    @property
    def active_seq(self) -> int:
        return self._files[-1].seq

    @property
    def position(self) -> int:
        """Where the next entry goes in the active file."""
        return self._pos

    def files(self) -> list[tuple[int, Path]]:
        """(seq, path) of the files the log keeps, oldest first."""
        with self._lock:
            return [(f.seq, f.path) for f in self._files]

    def append(self, entries: Iterable, *, sync: bool = True) -> int:
        """Append `(topic_id, base_offset, batch)` entries (batch: bytes-like, or a list
        of bytes-like pieces) in order; returns the bytes the log grew by. With
        sync, returns once they are durable."""
        prepared = [self._prepare(*entry) for entry in entries]
        grown = 0
        with self._lock:
            self._check_open()
            while prepared:
                end = self._pos
                take = 0
                for _, _, _, length in prepared:
                    if padded_end(end + ENTRY_HEADER + length) > self.wal_size:
                        break
                    end += ENTRY_HEADER + length
                    take += 1
                if take == 0:
                    grown += self._close_active()
                    self._advance()
                    continue
                group, prepared = prepared[:take], prepared[take:]
                grown += self._write_group(group, end, sync=sync)
        return grown

    def sync(self) -> None:
        with self._lock:
            self._check_open()
            self.backend.sync(self._fd)

    def mark_durable(self, topic_id: int, end_offset: int) -> None:
        """Topic `topic_id`'s segment is durable up to `end_offset`."""
        with self._lock:
            if end_offset > self._durable.get(topic_id, -1):
                self._durable[topic_id] = end_offset

    def forget_topic(self, topic_id: int) -> None:
        """A deleted topic: its entries never need replaying."""
        self.mark_durable(topic_id, 1 << 64)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._own_backend:
                self.backend.close()

    # inside the lock ---------------------------------------------------------

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"WAL {self.dir} is closed")

    def _prepare(self, topic_id: int, base_offset: int, batch) -> tuple:
        if not 0 < topic_id <= MAX_TOPIC_ID:
            raise ValueError(f"topic_id {topic_id}: must be in 1..{MAX_TOPIC_ID} (0 marks padding)")
        if not 0 <= base_offset < 1 << 64:
            raise ValueError(f"base_offset {base_offset}: must fit in 64 bits")
        pieces = _pieces(batch)
        length = sum(len(p) for p in pieces)
        if length > 0xFFFFFFFF or padded_end(ENTRY_HEADER + length) > self.wal_size:
            raise ValueError(f"topic {topic_id}: batch at offset {base_offset} of {length} bytes"
                             f" does not fit a WAL file of {self.wal_size} bytes")
        # The header's CRC depends on the file's seq, known only when the batch is placed.
        return topic_id, base_offset, pieces, length

    def _write_group(self, group: list, end: int, *, sync: bool) -> int:
        active = self._files[-1]
        parts: list = []
        for topic_id, base, pieces, length in group:
            header, _ = _entry_header(active.seq, topic_id, base, pieces)
            parts.append(header)
            parts.extend(pieces)
            if base + length > active.holds.get(topic_id, -1):
                active.holds[topic_id] = base + length
        stop = padded_end(end)
        if stop > end:
            parts.append(_padding_header(active.seq, stop - end - ENTRY_HEADER))
            parts.append(stop - end - ENTRY_HEADER)
        self._emit(self._pos, parts, stop - self._pos, sync=sync)
        grown = stop - self._pos
        self._pos = stop
        return grown

    def _close_active(self) -> int:
        """Pad the active file to its end, durably, before anything goes to the next."""
        rest = self.wal_size - self._pos
        if rest:
            zeros = rest - ENTRY_HEADER
            self._emit(self._pos, [_padding_header(self._files[-1].seq, zeros), zeros], rest,
                       sync=True)
            self._pos = self.wal_size
        return rest

    def _emit(self, start: int, parts: list, total: int, *, sync: bool) -> None:
        """Copy parts (bytes-like, or an int: that many zeros) into pooled aligned
        buffers and write them; only the last write carries the sync."""
        size = self.pool.size
        buf = self.pool.take()
        try:
            fill = written = 0
            for part in parts:
                if isinstance(part, int):
                    left, source = part, None
                else:
                    source = memoryview(part).cast("B")
                    left = len(source)
                taken = 0
                while left:
                    n = min(left, size - fill)
                    buf[fill:fill + n] = (self._zeros[:n] if source is None
                                          else source[taken:taken + n])
                    fill += n
                    taken += n
                    left -= n
                    if fill == size and written + fill < total:
                        self.backend.write(self._fd, start + written, [buf], sync=False)
                        written += fill
                        fill = 0
            self.backend.write(self._fd, start + written, [memoryview(buf)[:fill]], sync=sync)
        finally:
            self.pool.give(buf)

    def _reusable(self, wal_file: _WalFile) -> bool:
        return all(self._durable.get(t, -1) >= end for t, end in wal_file.holds.items())

    def _advance(self) -> None:
        """Move to the next seq: reuse the oldest file when all it holds is durable,
        else create one; drop surplus files that are free."""
        os.close(self._fd)
        self._fd = -1
        seq = self._files[-1].seq + 1
        if self._reusable(self._files[0]):
            reused = self._files.pop(0)
            path = self.dir / wal_filename(seq)
            os.rename(reused.path, path)
        else:
            path = self._create(seq)
        while len(self._files) >= self.keep_files and self._reusable(self._files[0]):
            os.unlink(self._files.pop(0).path)
        # The new name must be durable before entries seeded with it are acknowledged:
        # under its old name they would fail their CRC and stop replay in front of files
        # that still matter.
        fsync_dir(self.dir)
        self._activate(_WalFile(seq, path))

    def _create(self, seq: int) -> Path:
        path = self.dir / wal_filename(seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.posix_fallocate(fd, 0, self.wal_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def _activate(self, wal_file: _WalFile) -> None:
        self._fd, _ = open_for_append(wal_file.path, direct=self.backend.direct, create=False)
        self._files.append(wal_file)
        self._pos = 0

    def _open(self) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True)
            fsync_dir(self.dir.parent)
        existing = list_wal_files(self.dir)
        usable = []
        for seq, path in existing:
            if path.stat().st_size == self.wal_size:
                usable.append(_WalFile(seq, path))
            else:  # written with another wal_size; what it held is durable already
                os.unlink(path)
        seq = (existing[-1][0] if existing else 0) + 1
        if usable:
            newest = usable.pop()
            path = self.dir / wal_filename(seq)
            os.rename(newest.path, path)
        else:
            path = self._create(seq)
        self._files = usable
        fsync_dir(self.dir)
        self._activate(_WalFile(seq, path))
