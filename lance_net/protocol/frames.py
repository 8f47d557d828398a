"""The LWP frame: its 44-byte header, flags, kinds, and the two checksum dialects.

Owns the bytes of a frame and nothing above them; commands and connection state live elsewhere.
"""
from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import crc32c

from .errors import BadMagic, HeaderChecksumMismatch, UnsupportedVersion

MAGIC = b"LANC"
VERSION = 1
HEADER_SIZE = 44

# Large enough for the largest record (16 MiB of value) plus its TLV header and
# the rest of a batch.
DEFAULT_MAX_PAYLOAD_SIZE = 16 * 1024 * 1024 + 64 * 1024

FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
FLAG_INGEST = 0x04
FLAG_ACK = 0x08
FLAG_BACKPRESSURE = 0x10
FLAG_KEEPALIVE = 0x20
FLAG_CONTROL = 0x40
FLAG_EXTENDED_CRC = 0x80  # reserved for a later version; version 1 never sets it

Buffer = Union[bytes, bytearray, memoryview]
Payload = Union[Buffer, Sequence[Buffer]]

_HEADER = struct.Struct("<4sBBHIQQIIII")
_PREFIX = struct.Struct("<4sBBH")  # bytes 0..7, the only bytes header_crc covers
_HEADER_FIELDS = (
    ("batch_id", 64), ("timestamp_ns", 64), ("record_count", 32),
    ("payload_length", 32), ("payload_crc", 32), ("topic_id", 32),
)


class Dialect(enum.Enum):
    """Which CRC-32 a connection's checksums use (LWP.md section 1, "Checksum dialects")."""

    CRC32C = "crc32c"  # the published spec, and what this project sends
    IEEE = "ieee"      # what the upstream implementation sends (zlib.crc32)

    @property
    def checksum(self) -> Callable[..., int]:
        """checksum(data, value=0) -> int, chaining over several buffers like zlib.crc32."""
        return _CHECKSUM[self]


_CHECKSUM = {Dialect.CRC32C: crc32c.crc32c, Dialect.IEEE: zlib.crc32}

# Bytes 0..7 depend only on the flags, so every header CRC a sender needs is known in advance.
_HEADER_CRC = {
    dialect: tuple(fn(_PREFIX.pack(MAGIC, VERSION, flags, 0)) for flags in range(256))
    for dialect, fn in _CHECKSUM.items()
}


class FrameKind(enum.Enum):
    CONTROL = "control"
    KEEPALIVE = "keepalive"
    ACK = "ack"
    BACKPRESSURE = "backpressure"
    INGEST = "ingest"
    EMPTY = "empty"  # no kind flag and no payload: nothing this version can act on


def classify(flags: int, payload_length: int) -> FrameKind:
    """The kind of a frame, in the order LWP.md section 1 fixes for overlapping flags."""
    if flags & FLAG_CONTROL:
        return FrameKind.CONTROL
    if flags & FLAG_KEEPALIVE:
        return FrameKind.KEEPALIVE
    if flags & FLAG_ACK:
        return FrameKind.ACK
    if flags & FLAG_BACKPRESSURE:
        return FrameKind.BACKPRESSURE
    if flags & FLAG_INGEST or payload_length:
        return FrameKind.INGEST
    return FrameKind.EMPTY


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A decoded header; header_crc has already been checked and is not kept."""

    flags: int
    batch_id: int
    timestamp_ns: int
    record_count: int
    payload_length: int
    payload_crc: int
    topic_id: int

    @property
    def kind(self) -> FrameKind:
        return classify(self.flags, self.payload_length)


def parse_header(data: Buffer, offset: int = 0, dialect: Dialect | None = None,
                 *, stream_offset: int = 0) -> tuple[FrameHeader, Dialect]:
    """Decode and check the header at data[offset:offset+44].

    With dialect None the header CRC may match either algorithm, and the one it
    matches is returned; otherwise it must match `dialect`. Raises BadMagic,
    HeaderChecksumMismatch or UnsupportedVersion; `stream_offset` only labels them.
    """
    (magic, version, flags, reserved, header_crc, batch_id, timestamp_ns, record_count,
     payload_length, payload_crc, topic_id) = _HEADER.unpack_from(data, offset)
    if magic != MAGIC:
        raise BadMagic(bytes(magic), offset=stream_offset)
    if dialect is None:
        if header_crc == _prefix_crc(Dialect.CRC32C, version, flags, reserved):
            dialect = Dialect.CRC32C
        elif header_crc == _prefix_crc(Dialect.IEEE, version, flags, reserved):
            dialect = Dialect.IEEE
        else:
            raise HeaderChecksumMismatch(
                "header_crc",
                f"0x{_prefix_crc(Dialect.CRC32C, version, flags, reserved):08X} (crc32c) or "
                f"0x{_prefix_crc(Dialect.IEEE, version, flags, reserved):08X} (ieee)",
                header_crc, offset=stream_offset)
    elif header_crc != (expected := _prefix_crc(dialect, version, flags, reserved)):
        raise HeaderChecksumMismatch("header_crc", f"0x{expected:08X} ({dialect.value})",
                                     header_crc, offset=stream_offset)
    # Checked after the CRC so that a flipped bit reads as corruption, not as a newer version.
    if version != VERSION:
        raise UnsupportedVersion(version, offset=stream_offset)
    header = FrameHeader(flags, batch_id, timestamp_ns, record_count, payload_length,
                         payload_crc, topic_id)
    return header, dialect


def _prefix_crc(dialect: Dialect, version: int, flags: int, reserved: int) -> int:
    if version == VERSION and reserved == 0:
        return _HEADER_CRC[dialect][flags]
    return _CHECKSUM[dialect](_PREFIX.pack(MAGIC, version, flags, reserved))


def payload_buffers(payload: Payload) -> list[Buffer]:
    """A payload as a list of buffers: one buffer, or the sequence it was given as."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return [payload] if len(payload) else []
    return [b for b in payload if _nbytes(b)]


def _nbytes(buf: Buffer) -> int:
    return len(buf) if isinstance(buf, (bytes, bytearray)) else memoryview(buf).nbytes


def encode_header(dialect: Dialect, flags: int, *, batch_id: int = 0, timestamp_ns: int = 0,
                  record_count: int = 0, payload_length: int = 0, payload_crc: int = 0,
                  topic_id: int = 0) -> bytes:
    """The 44 header bytes of a frame whose payload length and CRC are already known."""
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"flags: expected 0..255, found {flags}")
    values = (batch_id, timestamp_ns, record_count, payload_length, payload_crc, topic_id)
    try:
        return _HEADER.pack(MAGIC, VERSION, flags, 0, _HEADER_CRC[dialect][flags], *values)
    except struct.error:
        for (name, bits), value in zip(_HEADER_FIELDS, values):
            if not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise ValueError(
                    f"{name}: expected an integer in 0..2**{bits}-1, found {value!r}") from None
        raise


def encode_frame_buffers(dialect: Dialect, flags: int, payload: Payload = b"", *,
                         batch_id: int = 0, timestamp_ns: int = 0, record_count: int = 0,
                         topic_id: int = 0) -> list[Buffer]:
    """A frame as [header, *payload buffers], ready for writelines()/sendmsg() without a copy."""
    buffers = payload_buffers(payload)
    checksum = _CHECKSUM[dialect]
    length = 0
    crc = 0
    for buf in buffers:
        length += _nbytes(buf)
        crc = checksum(buf, crc)
    header = encode_header(dialect, flags, batch_id=batch_id, timestamp_ns=timestamp_ns,
                           record_count=record_count, payload_length=length, payload_crc=crc,
                           topic_id=topic_id)
    return [header, *buffers]


def encode_frame(dialect: Dialect, flags: int, payload: Payload = b"", *, batch_id: int = 0,
                 timestamp_ns: int = 0, record_count: int = 0, topic_id: int = 0) -> bytes:
    """A whole frame as one bytes object."""
    return b"".join(encode_frame_buffers(
        dialect, flags, payload, batch_id=batch_id, timestamp_ns=timestamp_ns,
        record_count=record_count, topic_id=topic_id))
