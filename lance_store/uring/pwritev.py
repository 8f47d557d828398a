"""The portable write backend: pwritev with RWF_DSYNC (or then fdatasync), one worker thread for groups.

Used where io_uring is missing or disabled, and when configured; it has the
same interface and passes the same conformance suite as the io_uring one.
"""
from __future__ import annotations

import errno
import os
import threading
from collections import deque

from .backend import Doorbell, GroupLedger, WriteBackend, io_error, result_or_raise


class PwritevBackend(WriteBackend):
    """Blocking calls run on the caller's thread; submitted groups run one after
    another on a worker thread, which rings an eventfd as each one finishes, so
    callers watch and reap exactly as they do with io_uring."""

    name = "pwritev"
    direct = True

    def __init__(self):
        self._ledger = GroupLedger()
        self._doorbell = Doorbell()
        self._work: deque = deque()
        self._worker: threading.Thread | None = None
        self._closed = False

    def write(self, fd: int, offset: int, views: list, *, sync: bool) -> None:
        with self._ledger.lock:
            queued = self._ledger.busy(fd)
        if queued:  # stay behind the groups already submitted for this file
            self.wait(self._submit(fd, offset, views, sync, claim=True))
            return
        write_now(fd, offset, views, sync)

    def sync(self, fd: int) -> None:
        with self._ledger.lock:
            queued = self._ledger.busy(fd)
        if queued:
            self.wait(self._submit(fd, 0, [], True, claim=True))
            return
        _sync_now(fd)

    def submit(self, fd: int, offset: int, views: list, *, sync: bool) -> int:
        return self._submit(fd, offset, views, sync, claim=False)

    def _submit(self, fd: int, offset: int, views: list, sync: bool, *, claim: bool) -> int:
        length = sum(memoryview(v).nbytes for v in views)
        with self._ledger.lock:
            if self._closed:
                raise ValueError("io backend 'pwritev' is closed")
            group = self._ledger.open(fd, offset, length, claim=claim)
            group.work = (fd, offset, list(views), sync)
            self._work.append(group)
            self._ledger.changed.notify_all()
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="lance-pwritev", daemon=True)
                self._worker.start()
        return group.ticket

    def _run(self) -> None:
        ledger = self._ledger
        while True:
            with ledger.lock:
                while not self._work and not self._closed:
                    ledger.changed.wait()
                if not self._work:
                    return
                group = self._work.popleft()
            fd, offset, views, sync = group.work
            try:
                result = write_now(fd, offset, views, sync) if views else _sync_now(fd)
            except OSError as exc:
                result = exc
            with ledger.lock:
                group.work = None
                _, to_reap, _ = ledger.finish(group, result)
                ledger.changed.notify_all()
            if to_reap:
                self._doorbell.ring()

    def wait(self, ticket: int) -> int:
        ledger = self._ledger
        with ledger.lock:
            ledger.claim(ticket)
            done, result = ledger.take_claimed(ticket)
            while not done:
                ledger.changed.wait()
                done, result = ledger.take_claimed(ticket)
        return result_or_raise(result)

    def reap(self) -> list:
        self._doorbell.drain()
        with self._ledger.lock:
            return self._ledger.take_ready()

    def fileno(self) -> int:
        return self._doorbell.fileno()

    def close(self) -> None:
        """Finish the groups already submitted, then stop the worker."""
        with self._ledger.lock:
            if self._closed:
                return
            self._closed = True
            self._ledger.changed.notify_all()
        if self._worker is not None:
            self._worker.join()
        self._doorbell.close()


# Where the kernel takes RWF_DSYNC, a synced write is one call: the write and its
# flush (or FUA) go to the device together, as with O_DSYNC (measured on a virtio
# disk: p50 138 us against 147 us for pwritev then fdatasync of one 4 KiB block).
# Its durability covers this write's bytes and the file size, as `write` promises;
# `sync` stays an fdatasync, which covers every earlier write as well.
_DSYNC_FLAGS = getattr(os, "RWF_DSYNC", 0)


def write_now(fd: int, offset: int, views: list, sync: bool) -> int:
    global _DSYNC_FLAGS
    want = sum(memoryview(v).nbytes for v in views)
    flags = _DSYNC_FLAGS if sync else 0
    done = 0
    try:
        try:
            done = os.pwritev(fd, views, offset, flags)
        except OSError as exc:
            # Only "flag unknown" (EOPNOTSUPP) or "no pwritev2" (ENOSYS) mean the kernel
            # lacks RWF_DSYNC; EINVAL is a misaligned O_DIRECT write and raises as such.
            if not flags or exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            _DSYNC_FLAGS = flags = 0     # a kernel without RWF_DSYNC: fdatasync below
            done = os.pwritev(fd, views, offset)
        while done < want:  # short writes happen (signals, full disks): finish them
            n = os.pwritev(fd, _skip(views, done), offset + done, flags)
            if n == 0:
                raise OSError(errno.ENOSPC, "no progress")
            done += n
        if sync and not flags:
            os.fdatasync(fd)
    except OSError as exc:
        call = "pwritev" if done < want else "fdatasync"
        raise io_error(exc.errno, call, fd, offset + done, want - done) from exc
    return want


def _sync_now(fd: int) -> int:
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise io_error(exc.errno, "fdatasync", fd, 0, 0) from exc
    return 0


def _skip(views: list, n: int) -> list:
    out = []
    for v in views:
        v = memoryview(v).cast("B")
        if n >= len(v):
            n -= len(v)
            continue
        out.append(v[n:])
        n = 0
    return out
