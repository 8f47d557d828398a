"""BLAKE3 digests of files and file prefixes, the whole-file checksum of DR manifests.

Maps the file read-only and hashes with every core; it never writes.
"""
from __future__ import annotations

import mmap
import os

import blake3

EMPTY = blake3.blake3().hexdigest()
_CHUNK = 64 << 20


def _hasher():
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def digest_bytes(data) -> str:
    h = _hasher()
    h.update(data)
    return h.hexdigest()


def digest_file(path, length: int | None = None, *, progress=None) -> str:
    """Digest of the first `length` bytes of a file (the whole file when None).

    Raises ValueError naming the file when it holds fewer than `length` bytes.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        length = size if length is None else length
        if size < length:
            raise ValueError(f"{path}: holds {size} bytes, expected at least {length}")
        if length == 0:
            return EMPTY
        return digest_fd(f.fileno(), length, progress=progress)


def digest_fd(fd: int, length: int, *, progress=None) -> str:
    h = _hasher()
    if length == 0:
        return h.hexdigest()
    mm = mmap.mmap(fd, length, access=mmap.ACCESS_READ)
    try:
        with memoryview(mm) as view:
            for pos in range(0, length, _CHUNK):
                end = min(length, pos + _CHUNK)
                h.update(view[pos:end])
                # Hashed pages are not needed again by this process.
                mm.madvise(mmap.MADV_DONTNEED, pos, end - pos)
                if progress is not None:
                    progress(end - pos)
    finally:
        mm.close()
    return h.hexdigest()
