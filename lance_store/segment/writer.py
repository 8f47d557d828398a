"""The active segment's writer: groups of batches through a write backend.

It owns the file's data length and the partial last 4 KiB block, which it keeps
in memory and rewrites with the next group (O_DIRECT writes whole blocks), so
that past the data the file holds only zeros until the segment is sealed.
Batches are encoded straight into a pooled aligned buffer (a `GroupBuffer`) and
each group reaches the disk as one write.
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


class GroupBuffer:
    """One group of batches being built in a pooled buffer.

    `buf[0:fill]` goes to the file at `file_pos`; with O_DIRECT it starts with
    the segment's partial last block, so the write covers whole blocks.
    """

    __slots__ = ("buf", "view", "fill", "head", "file_pos", "size", "batches")

    def __init__(self, buf, fill: int, file_pos: int):
        self.buf = buf
        self.view = memoryview(buf)
        self.fill = self.head = fill
        self.file_pos = file_pos
        self.size = len(buf)
        self.batches: list[tuple[int, int, int]] = []   # (topic offset, start, end) in buf

    @property
    def has_data(self) -> bool:
        """Whether the group holds new bytes (beyond the rewritten tail block)."""
        return self.fill > self.head

    @property
    def room(self) -> int:
        return self.size - self.fill

    @property
    def data_end(self) -> int:
        """Segment data length once this group is written."""
        return self.file_pos + self.fill

    def put(self, data) -> None:
        n = len(data)
        self.buf[self.fill:self.fill + n] = data
        self.fill += n


def give_back(pool: BufferPool, g: GroupBuffer) -> None:
    """Return a group's buffer to the pool (once, however often it is called)."""
    if g.buf is not None:
        g.view.release()
        pool.give(g.buf)
        g.buf = None


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

    # -- groups ----------------------------------------------------------------------

    def begin(self, *, block: bool = True) -> GroupBuffer | None:
        """A pooled buffer for the next group (waits while every buffer is on
        loan; with block=False returns None instead)."""
        buf = self.pool.take(block=block)
        if buf is None:
            return None
        if not self.direct:
            return GroupBuffer(buf, 0, self.data_len)
        g = GroupBuffer(buf, len(self._tail), self.data_len - len(self._tail))
        buf[:len(self._tail)] = self._tail
        return g

    def release(self, g: GroupBuffer) -> None:
        give_back(self.pool, g)

    def commit(self, g: GroupBuffer, *, sync: bool) -> int:
        """Write the group (one request) and return the new data length; the
        buffer goes back to the pool. Raises WriteFailedError on a kernel error."""
        with self._lock:
            try:
                if self.direct:
                    aligned = align_up(g.fill)
                    g.buf[g.fill:aligned] = bytes(aligned - g.fill)
                    self.backend.write(self.fd, g.file_pos, [g.view[:aligned]], sync=sync)
                    last_block = g.fill - g.fill % BLOCK
                    self._tail = bytes(g.buf[last_block:g.fill])
                else:
                    self.backend.write(self.fd, g.file_pos, [g.view[:g.fill]], sync=False)
                    if sync:
                        self.backend.sync(self.fd)
                self.data_len = g.data_end
            except OSError as exc:
                raise WriteFailedError(self.path, g.file_pos, exc) from exc
            finally:
                self.release(g)
            return self.data_len

    def submit(self, g: GroupBuffer, *, sync: bool) -> int:
        """Start the group's write and return its backend ticket at once.

        The writer moves on as if the bytes were written (the next group starts
        after them); the caller keeps `g` until the ticket is reaped, then
        `release(g)`. The backend writes overlapping groups of a file in order.
        """
        with self._lock:
            if self.direct:
                aligned = align_up(g.fill)
                g.buf[g.fill:aligned] = bytes(aligned - g.fill)
                views = [g.view[:aligned]]
                tail = bytes(g.buf[g.fill - g.fill % BLOCK:g.fill])
            else:
                views, tail = [g.view[:g.fill]], b""
            try:
                ticket = self.backend.submit(self.fd, g.file_pos, views, sync=sync)
            except OSError as exc:
                raise WriteFailedError(self.path, g.file_pos, exc) from exc
            self._tail = tail
            self.data_len = g.data_end
            return ticket

    def write(self, chunks: list, *, sync: bool = True) -> int:
        """Append the chunks (any size: buffers are flushed as they fill);
        returns the new data length."""
        g = self.begin()
        try:
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                while view:
                    n = min(len(view), g.room)
                    g.put(view[:n])
                    view = view[n:]
                    if g.room == 0 and view:
                        self.commit(g, sync=False)
                        g = self.begin()
        except BaseException:
            self.release(g)
            raise
        return self.commit(g, sync=sync)

    # -- lifecycle -------------------------------------------------------------------

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
