"""The active segment's writer: appends bytes through a write backend.

It owns the file's data length and the partial last 4 KiB block, which it keeps
in memory and rewrites with the next group (O_DIRECT writes whole blocks), so
that past the data the file holds only zeros until the segment is sealed.
"""
from __future__ import annotations

import errno
import os
import threading

from ..errors import WriteFailedError
from ..uring.backend import BLOCK, BufferPool, WriteBackend, align_up


def open_for_append(path, *, direct: bool, create: bool) -> tuple[int, bool]:
    """Open a segment file for writing; returns (fd, direct actually in use).

    Some filesystems (tmpfs) refuse O_DIRECT with EINVAL; writing then falls
    back to buffered writes, still made durable by fdatasync.
    """
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    if direct and hasattr(os, "O_DIRECT"):
        try:
            return os.open(path, flags | os.O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.open(path, flags, 0o644), False


class SegmentWriter:
    def __init__(self, path, data_len: int, backend: WriteBackend, pool: BufferPool,
                 *, create: bool = False):
        self.path = os.fspath(path)
        self.backend = backend
        self.pool = pool
        self.fd, self.direct = open_for_append(self.path, direct=backend.direct, create=create)
        self.data_len = data_len
        self._lock = threading.Lock()
        self._tail = b""
        if self.direct and data_len % BLOCK:
            # O_DIRECT reads need aligned buffers too; a plain fd reads the tail.
            start = data_len - data_len % BLOCK
            with open(self.path, "rb") as f:
                self._tail = os.pread(f.fileno(), data_len - start, start)

    def write(self, chunks: list, *, sync: bool = True) -> int:
        """Append the chunks; returns the new data length. Raises WriteFailedError
        (with nothing acknowledged) when the kernel refuses."""
        with self._lock:
            try:
                if self.direct:
                    self._write_direct(chunks, sync)
                else:
                    self.backend.write(self.fd, self.data_len, chunks, sync=False)
                    if sync:
                        self.backend.sync(self.fd)
                    self.data_len += sum(len(c) for c in chunks)
            except OSError as exc:
                raise WriteFailedError(self.path, self.data_len, exc) from exc
            return self.data_len

    def _write_direct(self, chunks: list, sync: bool) -> None:
        total = len(self._tail) + sum(len(c) for c in chunks)
        file_pos = self.data_len - len(self._tail)
        end_len = self.data_len + total - len(self._tail)
        size = self.pool.size
        buf = self.pool.take()
        try:
            fill = 0
            pending = [memoryview(self._tail)] + [memoryview(c).cast("B") for c in chunks]
            written = 0
            for view in pending:
                while view:
                    n = min(len(view), size - fill)
                    buf[fill:fill + n] = view[:n]
                    fill += n
                    view = view[n:]
                    if fill == size and written + fill < total:
                        # A group larger than one pooled buffer: flush whole
                        # buffers unsynced; the final write carries the sync.
                        self.backend.write(self.fd, file_pos + written, [buf], sync=False)
                        written += fill
                        fill = 0
            aligned = align_up(fill)
            buf[fill:aligned] = bytes(aligned - fill)
            self.backend.write(self.fd, file_pos + written, [memoryview(buf)[:aligned]], sync=sync)
            last_block = fill - fill % BLOCK
            self._tail = bytes(buf[last_block:fill])
            self.data_len = end_len
        finally:
            self.pool.give(buf)

    def sync(self) -> None:
        with self._lock:
            try:
                self.backend.sync(self.fd)
            except OSError as exc:
                raise WriteFailedError(self.path, self.data_len, exc) from exc

    def finish(self) -> None:
        """Cut the file to its data (dropping the zero padding) and close it."""
        with self._lock:
            os.ftruncate(self.fd, self.data_len)
            os.fdatasync(self.fd)
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                try:
                    self.backend.sync(self.fd)
                finally:
                    os.close(self.fd)
                    self.fd = -1
