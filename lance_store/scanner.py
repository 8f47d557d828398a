"""Bulk scanning of segment bytes into numpy arrays: batches, the records inside them, legacy TLV runs.

It validates framing and checksums (FORMAT.md sections 2 and 3) over any buffer; it never opens files.

The work is done by a kernel chosen at import: the C one (`lance_store._native.c_kernel`)
when it is built, else the pure-Python reference (`py_kernel`); `LANCE_NO_EXTENSIONS=1`
forces the reference. `IMPLEMENTATION` says which one the module-level functions use, and
`Scanner(name)` binds the same functions to a named kernel.

Damage in a segment (the first invalid batch, a zero or torn tail) is data, reported in
`BatchScan.error`; a batch whose checksums pass but whose records do not frame exactly is a
writer bug, so `scan_records` and `scan_payload` raise `ScanError` for it.
"""
import contextlib
import os
from dataclasses import dataclass

import numpy as np

from lance_store._native import (
    BATCH_DTYPE, BATCH_OVERHEAD, FLAG_LZ4, REASONS, STATUS_END, STATUS_FAULT, STATUS_FULL,
    HEADER_LEN, U64, Stop, empty_records, py_kernel,
)

__all__ = [
    "IMPLEMENTATION", "KERNELS", "BatchScan", "Fault", "RecordScan", "ScanError", "Scanner",
    "scan_batches", "scan_legacy", "scan_payload", "scan_records", "value_at", "values",
]


def _load_kernels() -> dict:
    kernels = {"python": py_kernel}
    if os.environ.get("LANCE_NO_EXTENSIONS", "") not in ("", "0"):
        return kernels
    try:
        from lance_store._native import c_kernel
    except ImportError:
        return kernels
    kernels["c"] = c_kernel
    return kernels


KERNELS = _load_kernels()
IMPLEMENTATION = "c" if "c" in KERNELS else "python"


@dataclass(frozen=True, slots=True)
class Fault:
    """The first invalid thing a scan met.

    `pos` is its position in the scanned buffer and `offset` its topic byte offset.
    `expected`/`found` depend on `reason`: stored vs computed checksum for the crc
    mismatches, actual vs stored offset for "base offset mismatch", bytes needed vs bytes
    left for the torn ones, and None for "zero tail" (every byte from pos on is zero).
    """

    pos: int
    offset: int
    reason: str
    expected: int | None
    found: int | None

    def __str__(self) -> str:
        if self.expected is None:
            detail = ""
        elif self.reason == "bad magic":
            detail = (f": expected {self.expected.to_bytes(4, 'little')!r}, "
                      f"found {self.found.to_bytes(4, 'little')!r}")
        elif "crc" in self.reason:
            detail = f": expected 0x{self.expected:08X}, found 0x{self.found:08X}"
        else:
            detail = f": expected {self.expected}, found {self.found}"
        return f"{self.reason} at offset {self.offset} (position {self.pos}){detail}"


class ScanError(ValueError):
    """Records that passed their checksums but do not frame exactly (or a malformed request)."""

    def __init__(self, fault: Fault):
        super().__init__(str(fault))
        self.fault = fault
        self.pos = fault.pos
        self.offset = fault.offset
        self.reason = fault.reason
        self.expected = fault.expected
        self.found = fault.found


@dataclass(frozen=True, slots=True, eq=False)
class BatchScan:
    """The valid batches of a segment buffer, one array element per batch, in file order.

    `valid_end` is the position just past the longest valid prefix (batches and padding);
    `error` is the fault found there (None when the whole buffer is valid). With
    `stop_at_invalid=False` the scan also resynchronises on later valid batches: they are
    in the arrays too, `errors` lists every fault, and `prefix_count` says how many
    batches form the valid prefix.
    """

    segment_base: int
    pos: np.ndarray
    base_offset: np.ndarray
    first_ts: np.ndarray
    first_key: np.ndarray
    last_ts: np.ndarray
    producer_id: np.ndarray
    producer_seq: np.ndarray
    record_count: np.ndarray
    payload_length: np.ndarray
    header_crc: np.ndarray
    flags: np.ndarray
    valid_end: int
    padding_bytes: int
    error: Fault | None
    errors: tuple

    def __len__(self) -> int:
        return len(self.pos)

    @property
    def prefix_count(self) -> int:
        return int(np.searchsorted(self.pos, self.valid_end))

    @property
    def end(self) -> np.ndarray:
        """Position just past each batch."""
        return self.pos + np.uint64(BATCH_OVERHEAD) + self.payload_length

    def rows(self) -> np.ndarray:
        """The batches as one structured array (the layout the kernels read)."""
        rows = np.zeros(len(self), BATCH_DTYPE)
        for name in BATCH_DTYPE.names:
            rows[name] = getattr(self, name)
        return rows


@dataclass(frozen=True, slots=True, eq=False)
class RecordScan:
    """Records as parallel arrays, one element per record, in file order.

    `offset` is the topic byte offset of a record's TLV header, `value_pos` where its value
    starts in the scanned buffer. `valid_end`/`error` describe where the scanned data ended
    (passed through from the BatchScan for `scan_records`). `skipped_batches` holds the
    indices of LZ4-compressed batches, which `scan_records` leaves to `scan_payload`.
    """

    offset: np.ndarray
    value_pos: np.ndarray
    length: np.ndarray
    type: np.ndarray
    ext_type: np.ndarray
    timestamp: np.ndarray
    key_low: np.ndarray
    batch: np.ndarray
    valid_end: int
    error: Fault | None
    skipped_batches: np.ndarray

    def __len__(self) -> int:
        return len(self.offset)


@contextlib.contextmanager
def _byte_view(buf):
    """A flat unsigned-byte view of buf, released on exit so an mmap can be closed after."""
    with memoryview(buf) as view:
        if view.format == "B" and view.ndim == 1:
            yield view
        else:
            with view.cast("B") as flat:
                yield flat


def _fault(stop: Stop) -> Fault:
    reason = REASONS[stop.reason]
    if reason == "zero tail":
        return Fault(stop.fault_pos, stop.offset, reason, None, None)
    return Fault(stop.fault_pos, stop.offset, reason, stop.expected, stop.found)


def _check_u64(name: str, value: int) -> int:
    value = int(value)
    if not 0 <= value <= U64:
        raise ValueError(f"{name} must be an unsigned 64-bit integer, found {value}")
    return value


def _record_scan(out: dict, n: int, valid_end: int, error, skipped=None) -> RecordScan:
    columns = {name: array[:n] for name, array in out.items()}
    if skipped is None:
        skipped = np.zeros(0, np.uint32)
    return RecordScan(**columns, valid_end=valid_end, error=error, skipped_batches=skipped)


class Scanner:
    """The scan functions bound to one kernel ("c" or "python")."""

    def __init__(self, implementation: str = IMPLEMENTATION):
        if implementation not in KERNELS:
            raise ValueError(f"scanner implementation {implementation!r} is not available; "
                             f"available: {sorted(KERNELS)}")
        self.implementation = implementation
        self._kernel = KERNELS[implementation]

    def __repr__(self) -> str:
        return f"Scanner({self.implementation!r})"

    def crc32c(self, data, value: int = 0) -> int:
        """CRC-32C as the `crc32c` package computes it (value: the CRC so far)."""
        return self._kernel.crc32c(data, value)

    def scan_batches(self, buf, base_offset: int, *, stop_at_invalid: bool = True) -> BatchScan:
        """Validates the batches of a segment whose first byte is at topic offset base_offset."""
        base_offset = _check_u64("base_offset", base_offset)
        kernel = self._kernel
        with _byte_view(buf) as view:
            rows = np.empty(min(len(view) // BATCH_OVERHEAD + 1, 4096), BATCH_DTYPE)
            count = 0
            pos = 0
            padding = 0
            faults = []
            while True:
                k, stop = kernel.scan_batches(view, pos, base_offset, rows[count:])
                count += k
                padding += stop.padding_bytes
                pos = stop.pos
                if stop.status == STATUS_FULL:
                    grown = np.empty(2 * len(rows) + 16, BATCH_DTYPE)
                    grown[:count] = rows[:count]
                    rows = grown
                    continue
                if stop.status == STATUS_END:
                    break
                faults.append(_fault(stop))
                if stop_at_invalid:
                    break
                pos = kernel.find_batch(view, stop.fault_pos + 1, base_offset)
                if pos < 0:
                    break
            valid_end = faults[0].pos if faults else len(view)
        rows = rows[:count]
        return BatchScan(
            segment_base=base_offset,
            **{name: np.ascontiguousarray(rows[name]) for name in BATCH_DTYPE.names},
            valid_end=valid_end,
            padding_bytes=padding,
            error=faults[0] if faults else None,
            errors=tuple(faults),
        )

    def scan_records(self, buf, batches: BatchScan) -> RecordScan:
        """The records of every uncompressed batch in batches (found in the same buf).

        Raises ScanError when a batch's records overrun its payload or their number is not
        its record_count.
        """
        plain = (batches.flags & FLAG_LZ4) == 0
        # Every record takes at least a TLV header, which bounds a forged record_count.
        most = np.minimum(batches.record_count, batches.payload_length // HEADER_LEN)
        out = empty_records(int(most[plain].sum(dtype=np.uint64)))
        with _byte_view(buf) as view:
            written, stop = self._kernel.batch_records(view, batches.rows(), out)
        if stop.status == STATUS_FAULT:
            raise ScanError(_fault(stop))
        if stop.status != STATUS_END:
            raise RuntimeError(f"record columns overflowed after {written} records")
        skipped = np.flatnonzero(~plain).astype(np.uint32)
        return _record_scan(out, written, batches.valid_end, batches.error, skipped)

    def scan_payload(self, payload, *, first_offset: int = 0, timestamp: int = 0,
                     first_key_low: int = 0, batch: int = 0,
                     record_count: int | None = None) -> RecordScan:
        """The records of a bare run of TLV records (such as a decompressed batch payload).

        Record i gets offset first_offset + its position in payload, key_low
        first_key_low + i, and the given timestamp and batch index; value_pos is relative
        to payload. Raises ScanError when the run does not frame exactly or, when given,
        record_count differs.
        """
        first_offset = _check_u64("first_offset", first_offset)
        timestamp = _check_u64("timestamp", timestamp)
        first_key_low = _check_u64("first_key_low", first_key_low)
        kernel = self._kernel
        with _byte_view(payload) as view:
            n = len(view)
            count, stop = kernel.walk_records(view, 0, n, first_offset, timestamp, first_key_low,
                                              batch, U64, None)
            if stop.status != STATUS_END:
                raise ScanError(_fault(stop))
            if record_count is not None and count != record_count:
                raise ScanError(Fault(0, first_offset, "record count mismatch", record_count, count))
            out = empty_records(count)
            written, _ = kernel.walk_records(view, 0, n, first_offset, timestamp, first_key_low,
                                             batch, U64, out)
        return _record_scan(out, written, n, None)

    def scan_legacy(self, buf, base_offset: int = 0) -> RecordScan:
        """The records of a legacy (upstream) segment: a plain TLV stream, framing only.

        Stops at the first record that does not fit (reported in error; "zero tail" when
        every byte from there on is zero). Legacy records carry no SortKey: timestamp and
        key_low are 0, and batch is 0.
        """
        base_offset = _check_u64("base_offset", base_offset)
        kernel = self._kernel
        with _byte_view(buf) as view:
            n = len(view)
            count, stop = kernel.walk_records(view, 0, n, base_offset, 0, 0, 0, U64, None)
            error = None
            if stop.status == STATUS_FAULT:
                error = _fault(stop)
                if kernel.all_zero(view, stop.fault_pos):
                    error = Fault(error.pos, error.offset, "zero tail", None, None)
            out = empty_records(count)
            written, _ = kernel.walk_records(view, 0, n, base_offset, 0, 0, 0, U64, out)
        out["key_low"][:] = 0
        return _record_scan(out, written, stop.pos, error)


def value_at(buf, scan: RecordScan, i: int) -> memoryview:
    """Record i's value: a zero-copy view into buf (the buffer the scan read)."""
    start = int(scan.value_pos[i])
    return memoryview(buf)[start:start + int(scan.length[i])]


def values(buf, scan: RecordScan):
    """Every record's value, in order, as zero-copy views into buf."""
    view = memoryview(buf)
    for start, length in zip(scan.value_pos.tolist(), scan.length.tolist()):
        yield view[start:start + length]


_default = Scanner(IMPLEMENTATION)
crc32c = _default.crc32c
scan_batches = _default.scan_batches
scan_records = _default.scan_records
scan_payload = _default.scan_payload
scan_legacy = _default.scan_legacy
