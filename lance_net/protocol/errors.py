"""What can go wrong while speaking LWP: fatal peer faults, misuse, refused batches.

Owns the exception classes only; the codes carried in ErrorResponse messages live in `commands`.
"""
from __future__ import annotations

# Reason codes of fatal errors, stable strings meant for metric labels.
BAD_MAGIC = "bad_magic"
UNSUPPORTED_VERSION = "unsupported_version"
HEADER_CHECKSUM = "header_checksum"
PAYLOAD_CHECKSUM = "payload_checksum"
PAYLOAD_TOO_LARGE = "payload_too_large"
TRUNCATED = "truncated"

REASONS = (BAD_MAGIC, UNSUPPORTED_VERSION, HEADER_CHECKSUM, PAYLOAD_CHECKSUM, PAYLOAD_TOO_LARGE,
           TRUNCATED)


class ProtocolError(Exception):
    """The peer broke the framing: the connection is dead and must be closed.

    `reason` is one of REASONS; `offset` is the position in the received stream
    of the first byte of the offending frame.
    """

    reason: str = ""

    def __init__(self, message: str, *, offset: int = 0):
        super().__init__(f"{message} (frame at stream byte {offset})")
        self.offset = offset


class BadMagic(ProtocolError):
    reason = BAD_MAGIC

    def __init__(self, found: bytes, *, offset: int = 0):
        # `found` lets a listener tell another preamble (such as replication's LNCR) from garbage.
        super().__init__(f"magic: expected b'LANC', found {found!r}", offset=offset)
        self.found = found


class UnsupportedVersion(ProtocolError):
    reason = UNSUPPORTED_VERSION

    def __init__(self, found: int, *, offset: int = 0):
        super().__init__(f"version: expected 1, found {found}", offset=offset)
        self.found = found


class ChecksumMismatch(ProtocolError):
    """A header or payload checksum that matches no accepted algorithm."""

    def __init__(self, field: str, expected: str, found: int, *, offset: int = 0):
        super().__init__(f"{field}: expected {expected}, found 0x{found:08X}", offset=offset)
        self.expected = expected
        self.found = found


class HeaderChecksumMismatch(ChecksumMismatch):
    reason = HEADER_CHECKSUM


class PayloadChecksumMismatch(ChecksumMismatch):
    reason = PAYLOAD_CHECKSUM


class PayloadTooLarge(ProtocolError):
    reason = PAYLOAD_TOO_LARGE

    def __init__(self, length: int, limit: int, *, offset: int = 0):
        super().__init__(
            f"payload_length: expected at most {limit} bytes, found {length}", offset=offset
        )
        self.length = length
        self.limit = limit


class TruncatedFrame(ProtocolError):
    """The stream ended inside a frame."""

    reason = TRUNCATED

    def __init__(self, have: int, need: int, *, offset: int = 0):
        super().__init__(
            f"stream ended inside a frame: {have} of {need} bytes received", offset=offset
        )
        self.have = have
        self.need = need


class ConnectionStateError(RuntimeError):
    """This side misused a Connection (wrong role, after close, before the dialect is known)."""


class CompressionError(ValueError):
    """An LZ4 block that does not decompress within its limits."""


class InvalidBatch(ValueError):
    """An Ingest payload the broker refuses; the connection stays open.

    The message is the text after `INVALID_BATCH: ` in the ErrorResponse.
    """
