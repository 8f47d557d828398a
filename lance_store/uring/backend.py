"""The interface every write backend implements, and the aligned buffer pool.

A backend only moves whole 4 KiB-aligned blocks to a file and makes them
durable; the segment writer owns offsets, the partial tail block and batches.
"""
from __future__ import annotations

import mmap
import threading
from abc import ABC, abstractmethod

BLOCK = 4096


def align_up(n: int, block: int = BLOCK) -> int:
    return (n + block - 1) & ~(block - 1)


class WriteBackend(ABC):
    """Blocking group writes. `write(fd, offset, views, sync=True)` returns only
    when the bytes are on disk (data and size), or raises OSError."""

    name: str = "?"
    # whether this backend wants files opened with O_DIRECT and aligned writes
    direct: bool = True

    @abstractmethod
    def write(self, fd: int, offset: int, views: list, *, sync: bool) -> None:
        """Write the buffers back to back at `offset` (all aligned when direct)."""

    @abstractmethod
    def sync(self, fd: int) -> None:
        """Make everything written to fd durable (fdatasync)."""

    def close(self) -> None:
        pass


class BufferPool:
    """Page-aligned buffers allocated once and loaned out; never one per write.

    Anonymous mmaps are page-aligned, which O_DIRECT needs. When every buffer
    is on loan, `take` waits: that is the writer's natural backpressure.
    """

    def __init__(self, count: int = 4, size: int = 4 << 20):
        if size % BLOCK:
            raise ValueError(f"buffer size {size} is not a multiple of {BLOCK}")
        self.size = size
        self._free = [mmap.mmap(-1, size) for _ in range(count)]
        self._all = list(self._free)
        self._cond = threading.Condition()

    def take(self) -> mmap.mmap:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop()

    def give(self, buf: mmap.mmap) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify()

    def buffers(self) -> list:
        """Every buffer of the pool (for io_uring_register_buffers)."""
        return list(self._all)
