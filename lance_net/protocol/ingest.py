"""Checks an Ingest payload before a broker accepts it (LWP.md section 2).

Owns only the rule "exact TLV records, none of 0xFD/0xFE"; TLV itself is lance_store's.
"""
from __future__ import annotations

import numpy as np

from lance_store.errors import InvalidRecordError
from lance_store.records import BATCH_HEADER, MAX_VALUE_LEN, PADDING, iter_tlv
from lance_store.scanner import ScanError, scan_payload

from .errors import InvalidBatch
from .frames import Buffer

_COUNT_MISMATCH = "record count mismatch"


def count_records(payload: Buffer) -> int:
    """The number of TLV records in `payload`.

    Raises InvalidBatch, naming the record index and byte offset, when the
    payload does not parse exactly, holds a padding (0xFD) or batch-header
    (0xFE) record, or a value over the 16 MiB limit.
    """
    return _check(payload, None)


def validate_ingest(payload: Buffer, record_count: int) -> int:
    """count_records(payload), which must equal the frame's record_count."""
    return _check(payload, record_count)


def _check(payload: Buffer, record_count: int | None) -> int:
    # The scanner counts before it allocates its columns, so a forged
    # record_count is refused before it costs memory.
    try:
        scan = scan_payload(payload, record_count=record_count)
    except ScanError as exc:
        if exc.reason == _COUNT_MISMATCH:
            raise InvalidBatch(f"record_count {exc.expected} but payload holds "
                               f"{exc.found} records") from None
        raise _framing_error(payload, exc) from None
    types = scan.type
    bad = np.flatnonzero((types == PADDING) | (types == BATCH_HEADER)
                         | (scan.length > MAX_VALUE_LEN))
    if bad.size:
        index = int(bad[0])
        pos = int(scan.offset[index])
        rtype = int(types[index])
        if rtype == PADDING or rtype == BATCH_HEADER:
            name = "padding" if rtype == PADDING else "batch header"
            raise InvalidBatch(f"record {index} at byte {pos}: type 0x{rtype:02X} ({name}) "
                               f"is written by the broker only")
        raise InvalidBatch(f"record {index} at byte {pos}: value length expected at most "
                           f"{MAX_VALUE_LEN}, found {int(scan.length[index])}")
    return len(scan)


def _framing_error(payload: Buffer, exc: ScanError) -> InvalidBatch:
    """Words a framing fault with the index of the record that does not fit.

    The scanner reports only the byte position, so the records before it are
    walked again; this runs on refused batches only.
    """
    count = 0
    try:
        for _ in iter_tlv(payload, 0, exc.pos):
            count += 1
        next(iter_tlv(payload, exc.pos), None)
    except InvalidRecordError as walk_error:
        return InvalidBatch(f"record {count}: {walk_error}")
    return InvalidBatch(f"record {count} at byte {exc.pos}: {exc.reason}")
