"""The two interchangeable scanner kernels, C (`c_kernel`) and pure Python (`py_kernel`).

This module holds what they share: the batch row dtype, stop statuses and fault reasons.
"""
from typing import NamedTuple

import numpy as np

# The format constants are defined in records and segment.header; scan.c mirrors them.
from ..records import BATCH_HEADER, EXT_HEADER_LEN, EXTENDED, HEADER_LEN, PADDING
from ..segment.header import BATCH_OVERHEAD, FLAG_LZ4, HEADER_SIZE, MAGIC, VERSION

U64 = (1 << 64) - 1

# One row per valid batch; the layout matches `lnc_batch` in scan.h.
BATCH_DTYPE = np.dtype(
    {
        "names": [
            "pos", "base_offset", "first_ts", "first_key", "last_ts", "producer_id",
            "producer_seq", "record_count", "payload_length", "header_crc", "flags",
        ],
        "formats": ["u8"] * 7 + ["u4"] * 3 + ["u1"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 60, 64, 68],
        "itemsize": 72,
    }
)

RECORD_COLUMNS = (
    ("offset", np.uint64),
    ("value_pos", np.uint64),
    ("length", np.uint32),
    ("type", np.uint8),
    ("ext_type", np.uint16),
    ("timestamp", np.uint64),
    ("key_low", np.uint64),
    ("batch", np.uint32),
)

STATUS_END, STATUS_FAULT, STATUS_FULL = 0, 1, 2

# Indexed by the reason code both kernels report (the enum in scan.c).
REASONS = (
    None,
    "zero tail",
    "unexpected record type",
    "torn padding",
    "padding not zero",
    "bad batch header length",
    "torn batch",
    "bad magic",
    "bad version",
    "header crc mismatch",
    "base offset mismatch",
    "payload crc mismatch",
    "torn record",
    "record count mismatch",
    "batch outside buffer",
)
REASON_CODE = {name: code for code, name in enumerate(REASONS) if name}


class Stop(NamedTuple):
    """Where a kernel call stopped, and the fault that stopped it (reason 0: none)."""

    status: int
    pos: int
    padding_bytes: int = 0
    fault_pos: int = 0
    offset: int = 0
    reason: int = 0
    expected: int = 0
    found: int = 0


def empty_records(n: int) -> dict:
    return {name: np.empty(n, dtype) for name, dtype in RECORD_COLUMNS}
