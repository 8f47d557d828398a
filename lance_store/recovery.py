"""Recovery of one topic folder when a store opens (FORMAT.md section 8).

Sealed segments are trusted (their index rebuilt if missing or wrong); the
active segment is scanned from its start and cut at the first invalid batch.
A read-only opener computes the same state and changes nothing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import fsutil, scanner
from . import index as sparse_index
from .index.sparse import ENTRY_SIZE
from .segment import naming
from .segment.header import BATCH_OVERHEAD
from .segment.reader import SegmentScan, map_readonly, scan_segment

Warn = Callable[[str], None]

KNOWN_FILES = {"metadata.json", "epochs", "metadata.json.tmp", "epochs.tmp"}


@dataclass
class SegmentFile:
    """One segment of a topic as the engine tracks it."""

    name: naming.SegmentName
    path: str
    size: int                                  # bytes of valid data
    index: sparse_index.SparseIndex = field(repr=False, default=None)

    @property
    def end(self) -> int:
        return self.name.base + self.size

    @property
    def sealed(self) -> bool:
        return self.name.sealed


@dataclass
class TopicState:
    segments: list[SegmentFile]
    legacy: bool = False
    producers: list[tuple[int, int, int]] = field(default_factory=list)  # (pid, last seq, offset)
    newest: tuple[int, int, int] | None = None  # (last_ts, first_key_low, record_count)


def index_entries(scan: SegmentScan, interval: int = sparse_index.sparse.DEFAULT_INTERVAL) -> np.ndarray:
    b = scan.batches
    return sparse_index.build_entries(b.base_offset, b.first_ts, b.first_key, interval)


def cut_tail(path: str, valid_end: int) -> None:
    """Truncate an active segment to its valid data and make that durable, so a
    later crash cannot resurrect a batch that followed the cut."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, valid_end)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def describe_error(scan: SegmentScan) -> str:
    """The scanner's own wording: reason, offset, and expected/found (CRCs in hex)."""
    return "no error" if scan.error is None else str(scan.error)


def _load_sealed_index(folder: str, seg: SegmentFile, *, readonly: bool, interval: int,
                       warn: Warn) -> None:
    path = os.path.join(folder, seg.name.index_filename)
    entries = None
    if os.path.exists(path):
        try:
            entries = sparse_index.load(path)
            offs = entries["offset"]
            if len(offs) and (int(offs[0]) != seg.name.base or int(offs[-1]) >= seg.end
                              or np.any(np.diff(offs.astype(np.int64)) <= 0)):
                warn(f"{path}: index entries do not fit the segment "
                     f"(first {int(offs[0])}, expected {seg.name.base}); rebuilding")
                entries = None
        except ValueError as exc:
            warn(f"{exc}; rebuilding the index from the segment")
            entries = None
    elif seg.size:
        warn(f"{path}: index missing; rebuilding it from the segment")
    if entries is None:
        scan = scan_segment(seg.path, seg.name.base)
        entries = index_entries(scan, interval)
        if not readonly:
            sparse_index.write_atomic(path, entries)
    seg.index = sparse_index.SparseIndex(entries, interval)


def _complete_seal(folder: str, seg: SegmentFile, t1: int, interval: int, warn: Warn) -> None:
    """A crash in the middle of a seal left two active segments: finish the older."""
    scan = scan_segment(seg.path, seg.name.base)
    if scan.valid_end != scan.file_size:
        cut_tail(seg.path, scan.valid_end)
    sealed = seg.name.sealed_as(t1)
    sparse_index.write_atomic(os.path.join(folder, sealed.index_filename), index_entries(scan, interval))
    new_path = os.path.join(folder, sealed.filename)
    os.rename(seg.path, new_path)
    fsutil.fsync_dir(folder)
    warn(f"{seg.path}: completed an interrupted seal as {sealed.filename}")
    seg.name, seg.path, seg.size = sealed, new_path, scan.valid_end


def recover_topic(folder: str, *, readonly: bool, interval: int, warn: Warn) -> TopicState:
    names: list[naming.SegmentName] = []
    index_files: list[str] = []
    for entry in sorted(os.listdir(folder)):
        full = os.path.join(folder, entry)
        parsed = naming.parse(entry)
        if parsed is not None:
            names.append(parsed)
        elif entry.endswith(naming.INDEX_SUFFIX):
            index_files.append(entry)
        elif entry.endswith(".tmp"):
            if not readonly:
                os.unlink(full)  # a write that never reached its rename
        elif entry not in KNOWN_FILES and not entry.endswith(".sidx"):
            warn(f"{full}: not a LANCE file; ignored")

    if any(n.legacy for n in names):
        return _recover_legacy(folder, names, warn)

    names.sort(key=lambda n: n.base)
    actives = [n for n in names if not n.sealed]
    sealed = [n for n in names if n.sealed]
    segments = [SegmentFile(n, os.path.join(folder, n.filename), 0) for n in names]

    for seg in segments:
        if seg.sealed:
            seg.size = os.path.getsize(seg.path)

    # Two active segments: a seal was interrupted after the next segment was made.
    if len(actives) > 1:
        for seg in [s for s in segments if not s.sealed][:-1]:
            if readonly:
                # Served as completing the seal would leave it: its valid batches.
                seg.size = scan_segment(seg.path, seg.name.base).valid_end
                continue
            nxt = next(s for s in segments if s.name.base > seg.name.base)
            _complete_seal(folder, seg, max(nxt.name.t0, seg.name.t0 + 1), interval, warn)
        sealed = [s.name for s in segments if s.sealed]

    # An index left by a seal that never renamed its segment is not to be trusted.
    sealed_stems = {n.stem for n in (s.name for s in segments) if n.sealed}
    for idx in index_files:
        if idx[: -len(naming.INDEX_SUFFIX)] not in sealed_stems and not readonly:
            os.unlink(os.path.join(folder, idx))

    for seg in segments[:-1] if segments and not segments[-1].sealed else segments:
        _load_sealed_index(folder, seg, readonly=readonly, interval=interval, warn=warn)

    state = TopicState(segments)
    if not segments or segments[-1].sealed:
        base = segments[-1].end if segments else 0
        name = naming.active(base, time.time_ns())
        path = os.path.join(folder, name.filename)
        if not readonly:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            fsutil.fsync_dir(folder)
            segments.append(SegmentFile(name, path, 0, sparse_index.SparseIndex.empty(interval)))
        elif not segments:
            return state

    for prev, nxt in zip(segments, segments[1:]):
        if prev.end != nxt.name.base:
            warn(f"{nxt.path}: offset gap between segments (expected base {prev.end}, "
                 f"found {nxt.name.base})")

    active = segments[-1]
    scan = None
    if not active.sealed:
        scan = scan_segment(active.path, active.name.base)
        # The high watermark is the end of the last complete batch: padding after
        # it (or bytes that merely look like padding) is tail, not data.
        b = scan.batches
        end = int(b.pos[-1]) + BATCH_OVERHEAD + int(b.payload_length[-1]) if len(b.pos) else 0
        active.size = end
        active.index = sparse_index.SparseIndex(index_entries(scan, interval), interval)
        if end < scan.file_size:
            if not scan.zero_tail or end < scan.valid_end:
                why = describe_error(scan) if scan.error is not None else "padding after the last batch"
                warn(f"{active.path}: cut at offset {active.name.base + end} (byte {end}): {why}")
            if not readonly:
                cut_tail(active.path, end)
        _note_producers(state, scan)
    _note_newest(state, scan)
    return state


def older_producers(state: TopicState) -> None:
    """Producer sequences of the segment before the active one, so that a retry
    right after a rotation is still recognised. Topics load these lazily (on the
    first producer they do not know): read-only openers never pay for the scan."""
    segs = state.segments
    if len(segs) > 1 and segs[-2].size:   # sealed, or an interrupted seal read-only
        _note_producers(state, scan_segment(segs[-2].path, segs[-2].name.base), first=True)


def _note_producers(state: TopicState, scan: SegmentScan, *, first: bool = False) -> None:
    b = scan.batches
    pids = b.producer_id
    if not len(pids):
        return
    mask = pids != 0
    if not mask.any():
        return
    known = {p for p, _, _ in state.producers}
    found = []
    # the newest batch per producer: last occurrence of each id
    ids = pids[mask]
    seqs = b.producer_seq[mask]
    offs = b.base_offset[mask]
    rev_ids = ids[::-1]
    uniq, idx = np.unique(rev_ids, return_index=True)
    for pid, i in zip(uniq.tolist(), idx.tolist()):
        j = len(ids) - 1 - i
        if pid not in known:
            found.append((pid, int(seqs[j]), int(offs[j])))
    state.producers.extend(found)


def _note_newest(state: TopicState, active_scan: SegmentScan | None) -> None:
    """The newest batch of the topic, to advance the node's hybrid clock."""
    for seg in reversed(state.segments):
        if seg.size == 0:
            continue
        b = active_scan.batches if (active_scan is not None and seg is state.segments[-1]) else \
            scan_segment(seg.path, seg.name.base, length=seg.size).batches
        if len(b.pos):
            state.newest = (int(b.last_ts[-1]), int(b.first_key[-1]), int(b.record_count[-1]))
            return


def _recover_legacy(folder: str, names: list[naming.SegmentName], warn: Warn) -> TopicState:
    """Upstream segments: ordered by t0, offsets their concatenation from 0.

    Their SegmentName carries the topic offset as `base`; `path` keeps the
    file's own upstream name.
    """
    segments = []
    base = 0
    for n in sorted(names, key=lambda n: n.t0):
        path = os.path.join(folder, n.filename)
        size = os.path.getsize(path)
        mm = map_readonly(path, size)
        if mm is None:
            recs = scanner.scan_legacy(b"")
        else:
            with memoryview(mm) as view:
                recs = scanner.scan_legacy(view)
            mm.close()
        if recs.valid_end != size:
            warn(f"{path}: legacy segment framing breaks at byte {recs.valid_end} of {size}")
        seg_name = naming.SegmentName(base, n.t0, n.t1, legacy=True)
        seg = SegmentFile(seg_name, path, recs.valid_end, sparse_index.SparseIndex.empty())
        segments.append(seg)
        base += recs.valid_end
    return TopicState(segments, legacy=True)
