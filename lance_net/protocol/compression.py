"""The LZ4 block of a compressed payload (flag 0x01): `uncompressed_len u32 LE | LZ4 block`.

The same layout as a compressed batch on disk (FORMAT.md section 3), so a broker may store it as is.
"""
from __future__ import annotations

import struct

import lz4.block

from .errors import CompressionError
from .frames import Buffer

_SIZE = struct.Struct("<I")


def compress_block(data: Buffer) -> bytes:
    """Compress `data` into one block preceded by its uncompressed length."""
    return lz4.block.compress(data, store_size=True)


def decompress_block(block: Buffer, max_size: int) -> bytes:
    """Undo compress_block; refuses to allocate more than `max_size` bytes.

    The length prefix is read before anything is allocated, since a peer controls it.
    """
    if len(block) < _SIZE.size:
        raise CompressionError(
            f"LZ4 block: expected a 4-byte uncompressed_len, found {len(block)} bytes")
    (size,) = _SIZE.unpack_from(block)
    if size > max_size:
        raise CompressionError(
            f"LZ4 block: uncompressed_len expected at most {max_size}, found {size}")
    try:
        return lz4.block.decompress(block)
    except lz4.block.LZ4BlockError as exc:
        raise CompressionError(f"LZ4 block of uncompressed_len {size}: {exc}") from None
