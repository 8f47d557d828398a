"""Records of a FetchResponse as numpy columns over the fetched bytes, decoded by the C scanner.

Owns turning fetched data (whole batches, or an upstream server's plain TLV run) into records;
it never asks the broker for anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lance_store.records import BATCH_HEADER, HEADER_LEN, PADDING, Record
from lance_store.scanner import BatchScan, ScanError, scan_batches, scan_legacy, scan_payload, scan_records
from lance_store.segment.header import BATCH_OVERHEAD
from lance_store.segment.reader import decompress_payload
from lance_store.sortkey import SortKey

from .errors import ClientError

_EMPTY_U64 = np.zeros(0, np.uint64)

# A fetch of up to ~4 MiB: large enough that a consumer's round trips stay off the critical
# path (1 MiB fetches of fresh data read about 40% slower here), small enough that the
# protocol's receive buffer keeps its memory between frames (KEEP_CAPACITY).
DEFAULT_FETCH_BYTES = 4 * 1024 * 1024 - 16 * 1024


class FetchedDataError(ClientError):
    """Fetched bytes that do not decode: damaged in transit past the frame CRC, or a broker bug."""


@dataclass(frozen=True, slots=True, eq=False)
class RecordBatch:
    """The records of one fetch, in offset order, as parallel numpy arrays.

    `buffer` holds the values: record i's value is buffer[value_pos[i]:value_pos[i]+length[i]]
    (see value()). `batch_start[i]` is the offset of the batch holding record i, where a
    fetch must start to read it again; `next_offset` is where the next fetch starts.
    Records of an LZ4-compressed batch all carry the batch's own offset.
    """

    buffer: memoryview | bytes
    offset: np.ndarray
    timestamp: np.ndarray
    key_low: np.ndarray
    type: np.ndarray
    ext_type: np.ndarray
    length: np.ndarray
    value_pos: np.ndarray
    batch_start: np.ndarray
    next_offset: int

    def __len__(self) -> int:
        return len(self.offset)

    @property
    def nbytes(self) -> int:
        """Value bytes in the batch."""
        return int(self.length.sum(dtype=np.uint64))

    def value(self, i: int) -> memoryview:
        """Record i's value, a zero-copy view into the fetched bytes."""
        start = int(self.value_pos[i])
        return memoryview(self.buffer)[start:start + int(self.length[i])]

    def values(self) -> list[bytes]:
        """Every value as bytes (copied), in order."""
        view = memoryview(self.buffer)
        return [bytes(view[p:p + n]) for p, n in zip(self.value_pos.tolist(), self.length.tolist())]

    def sortkey(self, i: int) -> SortKey:
        return SortKey(int(self.timestamp[i]), int(self.key_low[i]))

    def __getitem__(self, i: int) -> Record:
        return Record(int(self.offset[i]), self.sortkey(i), int(self.type[i]),
                      bytes(self.value(i)), int(self.ext_type[i]))

    def records(self) -> list[Record]:
        """Every record as a lance_store Record with its value copied to bytes."""
        view = memoryview(self.buffer)
        return [Record(off, SortKey(ts, low), t, bytes(view[p:p + n]), ext)
                for off, ts, low, t, p, n, ext in zip(
                    self.offset.tolist(), self.timestamp.tolist(), self.key_low.tolist(),
                    self.type.tolist(), self.value_pos.tolist(), self.length.tolist(),
                    self.ext_type.tolist())]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def slice(self, start: int, stop: int) -> RecordBatch:
        """Records [start, stop) as views of the same arrays and buffer."""
        cut = slice(start, stop)
        resume = self.next_offset if stop >= len(self) else int(self.batch_start[stop])
        return RecordBatch(self.buffer, self.offset[cut], self.timestamp[cut], self.key_low[cut],
                           self.type[cut], self.ext_type[cut], self.length[cut],
                           self.value_pos[cut], self.batch_start[cut], resume)

    def resume_offset(self, i: int) -> int:
        """Where to fetch from to read record i (and everything after it) again."""
        return self.next_offset if i >= len(self) else int(self.batch_start[i])


def empty(next_offset: int) -> RecordBatch:
    u64 = _EMPTY_U64
    return RecordBatch(b"", u64, u64, u64, np.zeros(0, np.uint8), np.zeros(0, np.uint16),
                       np.zeros(0, np.uint32), u64, u64, next_offset)


def is_batched(data) -> bool:
    """True when fetched data is whole batches (this project's brokers), False for the plain TLV
    run an upstream server sends: the first unit that is not padding is a batch header. (A
    fetch may start at padding: a group of batches can end with some, up to a block boundary.)"""
    pos, n = 0, len(data)
    while pos + HEADER_LEN <= n and data[pos] == PADDING:
        pos += HEADER_LEN + int.from_bytes(data[pos + 1:pos + HEADER_LEN], "little")
    return pos >= n or data[pos] == BATCH_HEADER


def scan_fetched_batches(data, start: int) -> BatchScan:
    """The batches of fetched data starting at topic offset `start`; damage raises."""
    batches = scan_batches(data, start)
    if batches.error is not None:
        raise FetchedDataError(f"fetched data from offset {start}: {batches.error}")
    return batches


def decode(data, start: int, next_offset: int) -> RecordBatch:
    """The records of a FetchResponse for `start` whose next_offset the broker gave."""
    if len(data) == 0:
        return empty(next_offset)
    if not is_batched(data):
        return _decode_legacy(data, start)
    batches = scan_fetched_batches(data, start)
    try:
        recs = scan_records(data, batches)
    except ScanError as exc:
        raise FetchedDataError(f"fetched data from offset {start}: {exc}") from None
    batch_start = batches.base_offset[recs.batch]
    columns = [recs.offset, recs.timestamp, recs.key_low, recs.type, recs.ext_type, recs.length,
               recs.value_pos, batch_start]
    buffer = data
    if len(recs.skipped_batches):
        buffer, columns = _with_compressed(data, batches, recs.skipped_batches, columns)
    return RecordBatch(buffer, *columns, next_offset)


def _decode_legacy(data, start: int) -> RecordBatch:
    """A plain TLV run: records carry no SortKey; a record cut by the fetch limit is left for the
    next fetch, which starts where the whole records end."""
    recs = scan_legacy(data, start)
    if recs.error is not None and recs.error.reason != "torn record" and len(recs) == 0:
        raise FetchedDataError(f"fetched data from offset {start}: {recs.error}")
    return RecordBatch(data, recs.offset, recs.timestamp, recs.key_low, recs.type, recs.ext_type,
                       recs.length, recs.value_pos, recs.offset.copy(), start + recs.valid_end)


def _with_compressed(data, batches: BatchScan, skipped: np.ndarray, columns: list):
    """Append the decompressed payloads to the buffer and merge their records in offset order."""
    parts = [bytes(data)]
    extra = []
    base = len(parts[0])
    view = memoryview(data)
    for index in skipped.tolist():
        pos = int(batches.pos[index]) + BATCH_OVERHEAD
        payload = view[pos:pos + int(batches.payload_length[index])]
        try:
            plain = decompress_payload(bytes(payload))
            recs = scan_payload(plain, first_offset=int(batches.base_offset[index]),
                                timestamp=int(batches.first_ts[index]),
                                first_key_low=int(batches.first_key[index]), batch=index,
                                record_count=int(batches.record_count[index]))
        except (ValueError, ScanError) as exc:
            raise FetchedDataError(f"compressed batch at offset "
                                   f"{int(batches.base_offset[index])}: {exc}") from None
        n = len(recs)
        offset = np.full(n, batches.base_offset[index], np.uint64)
        extra.append([offset, recs.timestamp, recs.key_low, recs.type, recs.ext_type, recs.length,
                      recs.value_pos + np.uint64(base), offset.copy()])
        parts.append(plain)
        base += len(plain)
    merged = [np.concatenate([col] + [e[k] for e in extra]) for k, col in enumerate(columns)]
    order = np.argsort(merged[7], kind="stable")
    return b"".join(parts), [col[order] for col in merged]
