"""The portable write backend: pwritev then fdatasync.

Used where io_uring is missing or disabled, and when configured; it has the
same interface and passes the same conformance suite as the io_uring one.
"""
from __future__ import annotations

import os

from .backend import WriteBackend


class PwritevBackend(WriteBackend):
    name = "pwritev"
    direct = True

    def write(self, fd: int, offset: int, views: list, *, sync: bool) -> None:
        want = sum(len(v) for v in views)
        done = os.pwritev(fd, views, offset)
        while done < want:  # short writes happen (signals, full disks): finish them
            rest = _skip(views, done)
            n = os.pwritev(fd, rest, offset + done)
            if n == 0:
                raise OSError(28, "short write: no progress")
            done += n
        if sync:
            os.fdatasync(fd)

    def sync(self, fd: int) -> None:
        os.fdatasync(fd)


def _skip(views: list, n: int) -> list:
    out = []
    for v in views:
        if n >= len(v):
            n -= len(v)
            continue
        out.append(memoryview(v)[n:])
        n = 0
    return out
