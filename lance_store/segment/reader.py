"""Reading a segment file: whole-file batch scans in windows, and batch reads.

Scans map the file read-only and release each window's pages as they go, so a
segment larger than memory is verified or recovered in bounded memory.
"""
from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from dataclasses import dataclass, field

import lz4.block
import numpy as np

from .. import scanner
from ..errors import OffsetError
from ..records import HEADER_LEN, PADDING
from . import naming
from .header import BATCH_OVERHEAD, TLV_PREFIX, BatchHeader

WINDOW = 16 << 20
_PAGE = mmap.PAGESIZE
_PLEN = struct.Struct("<I")   # payload_length sits at byte 5+60 of a batch
_COUNT = struct.Struct("<I")
_BASE = struct.Struct("<Q")   # base_offset sits at byte 5+8


@dataclass
class SegmentScan:
    """The valid batches at the start of one segment file, and what stopped them."""

    path: str
    base: int
    file_size: int
    valid_end: int                 # bytes of valid data from the start of the file
    batches: scanner.BatchScan     # positions relative to the file start
    error: scanner.Fault | None = None
    padding_bytes: int = 0
    record_count: int = 0          # counted only with check_records=True

    @property
    def end_offset(self) -> int:
        return self.base + self.valid_end

    @property
    def batch_count(self) -> int:
        return len(self.batches.pos)

    @property
    def zero_tail(self) -> bool:
        """Everything after the valid data is zeros (normal for an active segment)."""
        return self.error is None or self.error.reason == "zero tail"


def map_readonly(path, length: int | None = None):
    """A read-only shared map of (at most `length` bytes of) the file, or None
    for an empty file. The map is never longer than the file is now: a writer
    may have cut an active segment's zero padding (at seal) since `length` was
    taken, and reading the bytes that remain is what a read-only opener wants."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if length is not None:
            size = min(size, length)
        if size == 0:
            return None
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)


def release_pages(mm, start: int, end: int) -> None:
    # Drop the window's pages from this process (they stay in the page cache):
    # verifying a 4 GiB topic must not make the process 4 GiB large.
    lo = start - start % _PAGE
    if end > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, end - lo)


def _shift(res: scanner.BatchScan, delta: int) -> scanner.BatchScan:
    return dataclasses.replace(res, pos=res.pos + np.uint64(delta))


def _shift_fault(fault: scanner.Fault | None, delta: int) -> scanner.Fault | None:
    return None if fault is None else dataclasses.replace(fault, pos=fault.pos + delta)


def _concat(parts: list[scanner.BatchScan], base: int, valid_end: int, padding: int,
            error) -> scanner.BatchScan:
    if not parts:
        parts = [scanner.scan_batches(b"", base)]
    cols = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMNS}
    return scanner.BatchScan(segment_base=base, **cols, valid_end=valid_end, padding_bytes=padding,
                             error=error, errors=(error,) if error else ())


_COLUMNS = ("pos", "base_offset", "first_ts", "first_key", "last_ts", "producer_id", "producer_seq",
            "record_count", "payload_length", "header_crc", "flags")


def _count_records(view, res: scanner.BatchScan) -> tuple[int, scanner.Fault | None]:
    """Check that every batch's records frame exactly; returns (records, first fault)."""
    try:
        recs = scanner.scan_records(view, res)
    except scanner.ScanError as exc:
        return 0, exc.fault
    count = len(recs)
    for i in recs.skipped_batches.tolist():  # LZ4 batches: decompress, then frame
        start = int(res.pos[i]) + BATCH_OVERHEAD
        payload = bytes(view[start:start + int(res.payload_length[i])])
        try:
            count += len(scanner.scan_payload(decompress_payload(payload),
                                              record_count=int(res.record_count[i])))
        except (scanner.ScanError, ValueError) as exc:
            return 0, scanner.Fault(int(res.pos[i]), int(res.base_offset[i]),
                                    f"compressed records invalid: {exc}", None, None)
    return count, None


def decompress_payload(payload: bytes) -> bytes:
    """An LZ4 batch payload: uncompressed_len:u32 then one LZ4 block (FORMAT.md section 3)."""
    if len(payload) < 4:
        raise ValueError("compressed payload shorter than its length prefix")
    (n,) = _PLEN.unpack_from(payload, 0)
    return lz4.block.decompress(payload[4:], uncompressed_size=n)


def scan_segment(path, base: int, *, length: int | None = None, window: int = WINDOW,
                 check_records: bool = False, progress=None) -> SegmentScan:
    """Scan a segment from its start and stop at the first invalid batch.

    With `check_records`, every batch's records must also frame exactly (verify).
    """
    path = os.fspath(path)
    source = _Windows(path, length)
    size = source.size
    if size == 0:
        source.close()
        return SegmentScan(path, base, 0, 0, _concat([], base, 0, 0, None))
    parts, error, padding, records = [], None, 0, 0
    pos, win, reported = 0, window, 0
    try:
        while pos < size:
            end = min(size, pos + win)
            with source.window(pos, end) as view:
                if len(view) < end - pos:          # the file was cut (a seal) meanwhile
                    size = end = pos + len(view)
                res = scanner.scan_batches(view, base + pos)
                if check_records and len(res.pos):
                    n, fault = _count_records(view, res)
                    if fault is not None:
                        # The batch's CRCs hold but its records do not frame: it
                        # ends the valid data like any other invalid batch.
                        keep = res.pos < np.uint64(fault.pos)
                        cut = int(res.pos[~keep][0]) if (~keep).any() else fault.pos
                        res = dataclasses.replace(
                            res, **{c: getattr(res, c)[keep] for c in _COLUMNS},
                            valid_end=cut, error=fault)
                        n = int(res.record_count.sum())
                    records += n
            source.release(pos, end)
            if len(res.pos):
                parts.append(_shift(res, pos))
            padding += res.padding_bytes
            if progress is not None and end > reported:
                progress(end - reported)
                reported = end
            if res.valid_end == end - pos and res.error is None:
                pos, win = end, window
                continue
            if end < size and res.error is not None and res.error.reason.startswith("torn"):
                # The window cut a batch in two: rescan from the last good
                # boundary, with a larger window when the batch is larger.
                if res.valid_end == 0:
                    win *= 2
                else:
                    pos, win = pos + res.valid_end, window
                continue
            error = _shift_fault(res.error, pos)
            pos += res.valid_end
            break
    finally:
        source.close()
    if progress is not None and size > reported:
        progress(size - reported)
    return SegmentScan(path, base, size, pos, _concat(parts, base, pos, padding, error), error,
                       padding, records)


class _Windows:
    """Windows of a segment file for a scan: a read-only map, or for an active segment
    scanned to its end, pread copies. A broker that seals the segment meanwhile cuts its
    zero tail and trailing padding, and a mapped page past the new end of the file would
    kill the reader (SIGBUS); a read just comes back short."""

    def __init__(self, path: str, length: int | None):
        name = naming.parse(os.path.basename(path))
        self.fd = -1
        self.mm = None
        if length is None and name is not None and not name.sealed:
            self.fd = os.open(path, os.O_RDONLY)
            self.size = os.fstat(self.fd).st_size
        else:
            self.mm = map_readonly(path, length)
            self.size = len(self.mm) if self.mm is not None else 0

    def window(self, start: int, end: int) -> memoryview:
        if self.mm is not None:
            return memoryview(self.mm)[start:end]
        return memoryview(os.pread(self.fd, end - start, start))

    def release(self, start: int, end: int) -> None:
        if self.mm is not None:
            release_pages(self.mm, start, end)

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
        if self.fd >= 0:
            os.close(self.fd)


def scan_records_windowed(mm, batches: scanner.BatchScan, window: int = WINDOW) -> scanner.RecordScan:
    """The records of a mapped segment's batches, walked a window at a time with
    each window's pages released afterwards (bounded RSS for any segment size)."""
    n = len(batches.pos)
    if n == 0:
        return scanner.scan_records(b"", batches)
    ends = batches.pos + np.uint64(BATCH_OVERHEAD) + batches.payload_length
    parts, firsts = [], []
    i = 0
    with memoryview(mm) as view:
        while i < n:
            start = int(batches.pos[i])
            j = max(i + 1, int(np.searchsorted(ends, np.uint64(start + window), side="right")))
            part = dataclasses.replace(batches, **{c: getattr(batches, c)[i:j] for c in _COLUMNS})
            parts.append(scanner.scan_records(view, part))
            firsts.append(i)
            release_pages(mm, start, int(ends[j - 1]))
            i = j
    if len(parts) == 1:
        return parts[0]
    # Batch indices come back relative to each window's slice: rebase them.
    cols = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _RECORD_COLUMNS if f != "batch"}
    cols["batch"] = np.concatenate([p.batch + np.uint32(k) for p, k in zip(parts, firsts)])
    skipped = np.concatenate([p.skipped_batches + np.uint32(k) for p, k in zip(parts, firsts)])
    return dataclasses.replace(parts[0], **cols, skipped_batches=skipped)


_RECORD_COLUMNS = ("offset", "value_pos", "length", "type", "ext_type", "timestamp", "key_low", "batch")


def read_unit(fd: int, pos: int) -> tuple[BatchHeader | None, int]:
    """The batch header at file position `pos` (None for a padding record) and
    the unit's size; (None, 0) past the data."""
    raw = os.pread(fd, BATCH_OVERHEAD, pos)
    if len(raw) < HEADER_LEN or (raw[0] != PADDING and len(raw) < BATCH_OVERHEAD):
        return None, 0
    size = _unit(raw, 0)[0]
    return (None if raw[0] == PADDING else BatchHeader.unpack(raw)), size


def _unit(data, pos: int) -> tuple[int, int]:
    """(size, records) of the batch or padding record at `pos` (a valid boundary)."""
    if data[pos] == PADDING:
        return HEADER_LEN + _PLEN.unpack_from(data, pos + 1)[0], 0
    return BATCH_OVERHEAD + _PLEN.unpack_from(data, pos + 65)[0], _COUNT.unpack_from(data, pos + 61)[0]


def _walk(fd: int, base: int, off: int, target: int) -> int | None:
    """The boundary reached walking batches (and padding) from `off` towards `target`,
    or None when a step is no batch start (`off` came from a wrong index entry)."""
    while off < target:
        raw = os.pread(fd, BATCH_OVERHEAD, off - base)
        if len(raw) < HEADER_LEN:
            break
        if raw[0] != PADDING and (len(raw) < BATCH_OVERHEAD or raw[:HEADER_LEN] != TLV_PREFIX
                                  or _BASE.unpack_from(raw, HEADER_LEN + 8)[0] != off):
            return None
        off += _unit(raw, 0)[0]
    return off


def locate(fd: int, base: int, from_offset: int, target: int) -> None:
    """Walk batch headers (and padding) from a known batch start up to `target`;
    raise INVALID_OFFSET when `target` falls inside a batch.

    A start that proves not to be a batch start (a wrong index entry) is retried
    from the segment's first byte: a wrong index never makes a batch unreadable.
    """
    off = _walk(fd, base, from_offset, target)
    if off is None and from_offset != base:
        off = _walk(fd, base, base, target)
    if off != target:
        raise OffsetError("INVALID_OFFSET", f"not a batch boundary: offset {target}")


def read_batches(fd: int, base: int, data_end: int, offset: int, max_bytes: int) -> tuple[bytes, int, int]:
    """Whole batches (and padding between them) starting at `offset`, at most
    `max_bytes` unless the first batch alone is larger; returns (data, next_offset, records)."""
    avail = data_end - offset
    if avail <= 0:
        return b"", offset, 0
    want = min(avail, max(max_bytes, BATCH_OVERHEAD))
    data = os.pread(fd, want, offset - base)
    pos = 0
    records = 0
    n = len(data)
    # The walk is per batch (not per record), over bytes already in memory.
    while pos + HEADER_LEN <= n:
        if data[pos] != PADDING and pos + BATCH_OVERHEAD > n:
            size = None
        else:
            size, count = _unit(data, pos)
        if size is None or pos + size > n:
            if pos == 0:  # the first batch alone is larger than max_bytes: send it whole
                head = os.pread(fd, BATCH_OVERHEAD, offset - base)
                size, count = _unit(head, 0)
                return os.pread(fd, size, offset - base), offset + size, count
            break
        records += count
        pos += size
    if pos == 0:
        return b"", offset, 0
    return (data if pos == n else data[:pos]), offset + pos, records


@dataclass
class BatchView:
    """One whole batch read from a segment."""

    header: BatchHeader
    data: bytes = field(repr=False)   # the whole batch, header record included

    @property
    def offset(self) -> int:
        return self.header.base_offset

    @property
    def payload(self) -> memoryview:
        return memoryview(self.data)[BATCH_OVERHEAD:]


def split_batches(data: bytes) -> list[BatchView]:
    """The batches of a run read by read_batches (padding between them skipped)."""
    out = []
    pos = 0
    while pos < len(data):
        size, _ = _unit(data, pos)
        if data[pos] != PADDING:
            out.append(BatchView(BatchHeader.unpack(data, pos), data[pos:pos + size]))
        pos += size
    return out
