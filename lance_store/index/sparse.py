"""Sparse index entries (ts, key_low, offset): building, loading, looking up.

Pure data over numpy; file writes go through `lance_store.fsutil` so the
tmp-fsync-rename dance exists once.
"""
from __future__ import annotations

import bisect
import operator
import os
from dataclasses import dataclass

import numpy as np

from .. import fsutil

_OFFSET = operator.itemgetter(0)

ENTRY_DTYPE = np.dtype([("ts", "<u8"), ("key", "<u8"), ("offset", "<u8")])
ENTRY_SIZE = ENTRY_DTYPE.itemsize  # 24
DEFAULT_INTERVAL = 4096


def build_entries(offsets, first_ts, first_keys, interval: int = DEFAULT_INTERVAL) -> np.ndarray:
    """Pick index entries from a segment's batch starts.

    The first batch always gets one; after it a batch gets one when it starts
    at least `interval` bytes past the previous entry. The loop runs once per
    entry (not per batch): searchsorted jumps over the batches in between.
    """
    offsets = np.asarray(offsets, dtype=np.uint64)
    n = len(offsets)
    picks = []
    i = 0
    while i < n:
        picks.append(i)
        i = int(np.searchsorted(offsets, offsets[i] + np.uint64(interval), side="left"))
    picks = np.asarray(picks, dtype=np.intp)
    out = np.empty(len(picks), dtype=ENTRY_DTYPE)
    out["ts"] = np.asarray(first_ts, dtype=np.uint64)[picks]
    out["key"] = np.asarray(first_keys, dtype=np.uint64)[picks]
    out["offset"] = offsets[picks]
    return out


def write_atomic(path, entries: np.ndarray) -> None:
    fsutil.write_atomic(path, np.ascontiguousarray(entries, dtype=ENTRY_DTYPE).tobytes())


def load(path) -> np.ndarray:
    """Memory-map an index read-only; a file of a size that is not a multiple
    of 24 bytes raises ValueError naming it (callers rebuild from the segment)."""
    size = os.path.getsize(path)
    if size % ENTRY_SIZE:
        raise ValueError(f"{path}: size {size} is not a multiple of {ENTRY_SIZE}-byte entries")
    if size == 0:
        return np.empty(0, dtype=ENTRY_DTYPE)
    return np.memmap(path, dtype=ENTRY_DTYPE, mode="r")


@dataclass
class SparseIndex:
    """Entries of one segment, searchable by offset and by time.

    Sealed segments hand in a memmap; the active segment appends in memory.
    """

    entries: np.ndarray
    interval: int = DEFAULT_INTERVAL

    def __post_init__(self):
        self._pending: list[tuple[int, int, int]] = []

    @classmethod
    def empty(cls, interval: int = DEFAULT_INTERVAL) -> "SparseIndex":
        return cls(np.empty(0, dtype=ENTRY_DTYPE), interval)

    def _flush(self) -> None:
        if self._pending:
            extra = np.array(self._pending, dtype=ENTRY_DTYPE)
            self.entries = np.concatenate([np.asarray(self.entries), extra])
            self._pending.clear()

    def last_offset(self) -> int | None:
        if self._pending:
            return self._pending[-1][2]
        return int(self.entries["offset"][-1]) if len(self.entries) else None

    def note_batches(self, batches: list[tuple[int, int, int]]) -> None:
        """Batches appended to the active segment, as (offset, ts, key) oldest first.
        A batch gets an entry when it starts `interval` bytes past the last entry; a
        bisection finds each such batch, so the cost follows entries, not batches."""
        last = self.last_offset()
        i = 0 if last is None else bisect.bisect_left(batches, last + self.interval, key=_OFFSET)
        while i < len(batches):
            offset, ts, key = batches[i]
            self._pending.append((ts, key, offset))
            i = bisect.bisect_left(batches, offset + self.interval, lo=i + 1, key=_OFFSET)

    def floor_offset(self, offset: int) -> int | None:
        """The indexed batch start at or before `offset`, or None."""
        self._flush()
        offs = self.entries["offset"]
        i = int(np.searchsorted(offs, np.uint64(offset), side="right")) - 1
        return int(offs[i]) if i >= 0 else None

    def floor_time(self, ts: int) -> int | None:
        """The last indexed batch start whose first timestamp is before `ts`."""
        self._flush()
        i = int(np.searchsorted(self.entries["ts"], np.uint64(ts), side="left")) - 1
        return int(self.entries["offset"][i]) if i >= 0 else None

    def array(self) -> np.ndarray:
        self._flush()
        return self.entries

    def __len__(self) -> int:
        return len(self.entries) + len(self._pending)
