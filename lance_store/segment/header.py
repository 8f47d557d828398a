"""The 72-byte batch header (FORMAT.md section 3) and whole-batch encoding.

A batch is TLV(0xFE, 72, header) followed by `payload_length` bytes of records.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

import crc32c

from ..records import BATCH_HEADER, HEADER_LEN

MAGIC = b"LNCB"
VERSION = 1
FLAG_LZ4 = 0x01
HEADER_SIZE = 72
BATCH_OVERHEAD = HEADER_LEN + HEADER_SIZE  # 77: the 0xFE record in front of every batch

# magic, version, flags, reserved, base_offset, first_ts, first_key_low,
# last_ts, producer_id, producer_seq, record_count, payload_length, payload_crc
_BODY = struct.Struct("<4sBBHQQQQQQIII")
_CRC = struct.Struct("<I")
_TLV = struct.Struct("<BI")
TLV_PREFIX = _TLV.pack(BATCH_HEADER, HEADER_SIZE)


class BatchHeader(NamedTuple):
    """A batch header's fields. A NamedTuple: one is made per batch on the
    append path, where a frozen dataclass costs several times more."""

    base_offset: int
    first_timestamp_ns: int
    first_key_low: int
    last_timestamp_ns: int
    record_count: int
    payload_length: int
    payload_crc: int
    producer_id: int = 0
    producer_seq: int = 0
    flags: int = 0
    header_crc: int = 0

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies in the segment."""
        return BATCH_OVERHEAD + self.payload_length

    @property
    def end_offset(self) -> int:
        return self.base_offset + BATCH_OVERHEAD + self.payload_length

    def pack(self) -> bytes:
        """The 0xFE record (77 bytes), header_crc computed here."""
        body = _BODY.pack(
            MAGIC, VERSION, self.flags, 0, self.base_offset, self.first_timestamp_ns,
            self.first_key_low, self.last_timestamp_ns, self.producer_id,
            self.producer_seq, self.record_count, self.payload_length, self.payload_crc,
        )
        return TLV_PREFIX + body + _CRC.pack(crc32c.crc32c(body))

    @classmethod
    def unpack(cls, buf, pos: int = 0) -> "BatchHeader":
        """Parse the 0xFE record at `pos` without validating it (see `problem`)."""
        (magic, version, flags, _res, base, fts, fkey, lts, pid, pseq, count, plen,
         pcrc) = _BODY.unpack_from(buf, pos + HEADER_LEN)
        (hcrc,) = _CRC.unpack_from(buf, pos + HEADER_LEN + 68)
        return cls(base, fts, fkey, lts, count, plen, pcrc, pid, pseq, flags, hcrc)


def header_problem(buf, pos: int, expected_offset: int) -> tuple[str, object, object] | None:
    """Why the batch header record at `pos` is invalid, or None when it is valid.

    Returns (what, expected, found) so callers can build a CorruptionError.
    """
    if len(buf) - pos < BATCH_OVERHEAD:
        return ("torn batch header", BATCH_OVERHEAD, len(buf) - pos)
    if bytes(buf[pos:pos + HEADER_LEN]) != TLV_PREFIX:
        return ("not a batch header record", TLV_PREFIX.hex(), bytes(buf[pos:pos + HEADER_LEN]).hex())
    start = pos + HEADER_LEN
    if bytes(buf[start:start + 4]) != MAGIC:
        return ("bad batch magic", MAGIC, bytes(buf[start:start + 4]))
    if buf[start + 4] != VERSION:
        return ("unknown batch version", VERSION, buf[start + 4])
    (stored,) = _CRC.unpack_from(buf, start + 68)
    actual = crc32c.crc32c(buf[start:start + 68])
    if stored != actual:
        return ("header crc mismatch", f"0x{actual:08X}", f"0x{stored:08X}")
    (base,) = struct.unpack_from("<Q", buf, start + 8)
    if base != expected_offset:
        return ("base_offset discontinuity", expected_offset, base)
    return None


def encode_batch(
    payload: bytes,
    record_count: int,
    *,
    base_offset: int,
    first_timestamp_ns: int,
    first_key_low: int,
    producer_id: int = 0,
    producer_seq: int = 0,
) -> tuple[bytes, BatchHeader]:
    """Header record for an uncompressed payload; returns (header bytes, header)."""
    hdr = BatchHeader(
        base_offset=base_offset,
        first_timestamp_ns=first_timestamp_ns,
        first_key_low=first_key_low,
        last_timestamp_ns=first_timestamp_ns,
        record_count=record_count,
        payload_length=len(payload),
        payload_crc=crc32c.crc32c(payload),
        producer_id=producer_id,
        producer_seq=producer_seq,
    )
    return hdr.pack(), hdr
