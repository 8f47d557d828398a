"""The io_uring write backend: groups of O_DIRECT writes and their sync in one submission.

The C layer (`_uring`, built from uring.c) queues a whole group per call and reaps
completions in batches; this module tracks groups and orders their results. When
the kernel refuses io_uring the constructor raises OSError and `select_backend`
picks pwritev instead.

Driving groups from an asyncio loop (the pwritev backend works the same way)::

    backend = select_backend("auto")
    pending: dict[int, asyncio.Future] = {}

    def on_completions():
        for ticket, result in backend.reap():
            future = pending.pop(ticket)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    loop.add_reader(backend.fileno(), on_completions)

    async def commit(fd, offset, block_views):
        future = loop.create_future()
        pending[backend.submit(fd, offset, block_views, sync=True)] = future
        return await future    # the group's bytes are durable here

The views must stay alive and unchanged until the future resolves (return a
pooled buffer to its pool then, not before). Results of one fd resolve in
submission order, so acknowledging in completion order acknowledges in log order.
"""
from __future__ import annotations

import errno
import logging
import os
import time

from .pwritev import write_now
from .backend import Doorbell, Group, GroupLedger, WriteBackend, io_error, result_or_raise
from ._uring import ffi, lib

log = logging.getLogger("lance_store.io")

SYNC_METHODS = {"dsync": lib.LNC_SYNC_DSYNC, "fsync": lib.LNC_SYNC_FSYNC}
_INDEX_BITS = 16  # user_data = round serial << 16 | index of the SQE in its group
_KICK = 0         # serial of the no-op that wakes a thread blocked in the kernel
SMALL_WRITE = 64 * 1024   # blocking writes up to this size skip the ring when it is idle


class _Flight:
    """A group inside the ring: its pieces, the bytes each has landed, the current round."""

    __slots__ = ("group", "fd", "sync", "pieces", "landed", "round", "outstanding", "error",
                 "progressed")

    def __init__(self, group: Group, fd: int, sync: int, pieces: list):
        self.group = group
        self.fd = fd
        self.sync = sync
        self.pieces = pieces            # [(cdata, length, file offset)]
        self.landed = [0] * len(pieces)
        self.round: list[int] = []     # piece index of each write SQE in flight
        self.outstanding = 0
        self.error: OSError | None = None
        self.progressed = False


class UringBackend(WriteBackend):
    """One io_uring per backend, shared by every file the store writes.

    `sync_method` "dsync" puts RWF_DSYNC on each write of a synced group;
    "fsync" links an fdatasync after the group's writes. A short write (a full
    disk, a file size limit) is continued with the remainder until the kernel
    names its error, which then fails the group with that errno.
    """

    name = "uring"
    direct = True

    def __init__(self, entries: int = 256, *, sync_method: str = "dsync"):
        if sync_method not in SYNC_METHODS:
            raise ValueError(f"sync_method {sync_method!r}: choose one of"
                             f" {', '.join(SYNC_METHODS)}")
        self.sync_method = sync_method
        self._doorbell = Doorbell()
        out = ffi.new("lnc_ring **")
        rc = lib.lnc_ring_open(out, entries, self._doorbell.fileno())
        if rc < 0:
            self._doorbell.close()
            raise OSError(-rc, f"{errno.errorcode.get(-rc, -rc)}: io_uring setup with {entries}"
                               f" entries refused: {os.strerror(-rc)}")
        self._ring = out[0]
        self._capacity = lib.lnc_ring_capacity(self._ring)
        self._cqes = ffi.new("lnc_completion[]", 2 * self._capacity)
        # The piece table and counter a submission hands the C side; the ring copies
        # them into its entries at once, so one of each serves every submission.
        self._table = ffi.new("lnc_piece[]", self._capacity)
        self._fixed = ffi.new("unsigned *")
        self._ledger = GroupLedger()
        self._lock = self._ledger.lock
        self._rounds: dict[int, _Flight] = {}
        self._serial = 0
        self._parked: list[_Flight] = []   # groups the submission queue had no room for
        self._needs_flush = False
        self._in_kernel = False
        self._registered: list = []
        self._closed = False
        self.stats = {"groups": 0, "sqes": 0, "fixed_writes": 0}


    # blocking calls ------------------------------------------------------

    def write(self, fd: int, offset: int, views: list, *, sync: bool) -> None:
        # A small blocking write with nothing in flight on its file gains nothing
        # from the ring, and the kernel hands O_DIRECT+DSYNC ring writes to a
        # worker thread: plain syscalls answer about 100 us sooner (measured).
        if sum(len(v) for v in views) <= SMALL_WRITE:
            with self._lock:
                idle = not self._ledger.busy(fd)
            if idle:
                write_now(fd, offset, views, sync)
                return
        self.wait(self._submit(fd, offset, views, sync, claim=True))

    def sync(self, fd: int) -> None:
        self.wait(self._submit(fd, 0, [], True, claim=True))

    # groups ----------------------------------------------------------------

    def submit(self, fd: int, offset: int, views: list, *, sync: bool) -> int:
        return self._submit(fd, offset, views, sync, claim=False)

    def _submit(self, fd: int, offset: int, views: list, sync: bool, *, claim: bool) -> int:
        pieces = []
        pos = offset
        for view in views:
            view = memoryview(view)
            if view.nbytes:
                pieces.append((ffi.from_buffer(view), view.nbytes, pos))
                pos += view.nbytes
        if len(pieces) + 1 > self._capacity:
            raise ValueError(f"a group of {len(pieces)} buffers does not fit the ring's"
                             f" {self._capacity} entries; join the buffers first")
        with self._lock:
            self._check_open()
            group = self._ledger.open(fd, offset, pos - offset, claim=claim)
            mode = SYNC_METHODS[self.sync_method] if sync else lib.LNC_SYNC_NONE
            group.work = _Flight(group, fd, mode, pieces)
            self.stats["groups"] += 1
            if not group.blocked:
                self._start(group.work)
        return group.ticket

    def wait(self, ticket: int) -> int:
        with self._lock:
            self._ledger.claim(ticket)
            self._pump(lambda: self._ledger.released(ticket))
            _, result = self._ledger.take_claimed(ticket)
        return result_or_raise(result)

    def reap(self) -> list:
        # Drain before collecting: a completion posted after this point rings again.
        self._doorbell.drain()
        with self._lock:
            if not self._closed:
                self._collect()
            return self._ledger.take_ready()

    def fileno(self) -> int:
        return self._doorbell.fileno()

    def register_buffers(self, pool) -> bool:
        buffers = [ffi.from_buffer(b) for b in pool.buffers()]
        table = ffi.new("lnc_piece[]", len(buffers))
        for i, buf in enumerate(buffers):
            table[i].buf = buf
            table[i].len = len(buf)
        with self._lock:
            self._check_open()
            rc = lib.lnc_ring_register_buffers(self._ring, table, len(buffers))
            if rc < 0:
                self._registered = []
                log.info("io_uring: pool buffers not registered (%s: %s); writes use plain"
                         " IORING_OP_WRITE", errno.errorcode.get(-rc, -rc), os.strerror(-rc))
                return False
            self._registered = buffers
        return True

    def close(self) -> None:
        """Let the groups in flight finish, then tear the ring down."""
        with self._lock:
            if self._closed:
                return
            # Nobody may still sleep in the kernel on the ring about to be freed.
            self._pump(lambda: self._ledger.in_flight == 0 and not self._in_kernel)
            self._closed = True
            lib.lnc_ring_close(self._ring)
            self._ring = ffi.NULL
            self._registered = []
            self._doorbell.close()

    # inside the lock ---------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("io backend 'uring' is closed")

    def _start(self, flight: _Flight) -> None:
        """Submit the unwritten part of every piece (all of it on the first round)."""
        todo = [i for i, (_, length, _) in enumerate(flight.pieces) if flight.landed[i] < length]
        if not todo and flight.sync == lib.LNC_SYNC_NONE:
            self._finish(flight, 0, signaled=False)
            return
        table = self._table
        for slot, i in enumerate(todo):
            buf, length, offset = flight.pieces[i]
            done = flight.landed[i]
            table[slot].buf = ffi.cast("char *", buf) + done
            table[slot].len = length - done
            table[slot].offset = offset + done
        self._serial += 1
        serial = self._serial
        fixed = self._fixed
        rc = lib.lnc_ring_submit_group(self._ring, flight.fd, table, len(todo), flight.sync,
                                       serial << _INDEX_BITS, fixed)
        if rc == -errno.EAGAIN:
            self._parked.append(flight)
            return
        if rc < 0:
            first = flight.pieces[todo[0]] if todo else (None, 0, 0)
            self._finish(flight, io_error(-rc, "io_uring submit", flight.fd, first[2], first[1]),
                         signaled=False)
            return
        flight.round = todo
        flight.outstanding = rc
        flight.error = None
        flight.progressed = False
        self._rounds[serial] = flight
        self.stats["sqes"] += rc
        self.stats["fixed_writes"] += fixed[0]
        if lib.lnc_ring_pending(self._ring):
            self._needs_flush = True

    def _collect(self) -> None:
        if self._needs_flush:
            lib.lnc_ring_flush(self._ring)
            self._needs_flush = bool(lib.lnc_ring_pending(self._ring))
        if self._parked:
            parked, self._parked = self._parked, []
            for flight in parked:
                self._start(flight)
        room = len(self._cqes)
        while True:
            n = lib.lnc_ring_reap(self._ring, self._cqes, room)
            for i in range(n):
                cqe = self._cqes[i]
                self._complete(cqe.user_data, cqe.res)
            if n < room:
                break
        self._ledger.changed.notify_all()

    def _complete(self, user_data: int, res: int) -> None:
        serial, index = user_data >> _INDEX_BITS, user_data & ((1 << _INDEX_BITS) - 1)
        flight = self._rounds.get(serial)
        if flight is None:  # a kick
            return
        if index < len(flight.round):
            piece = flight.round[index]
            _, length, offset = flight.pieces[piece]
            if res > 0:
                flight.landed[piece] += res
                flight.progressed = True
            elif res < 0 and res != -errno.ECANCELED and flight.error is None:
                done = flight.landed[piece]
                flight.error = io_error(-res, "write", flight.fd, offset + done, length - done)
        elif res < 0 and res != -errno.ECANCELED and flight.error is None:
            flight.error = io_error(-res, "fdatasync", flight.fd, flight.group.start, 0)
        flight.outstanding -= 1
        if flight.outstanding:
            return
        del self._rounds[serial]
        if flight.error is not None:
            self._finish(flight, flight.error, signaled=True)
        elif all(flight.landed[i] == p[1] for i, p in enumerate(flight.pieces)):
            self._finish(flight, sum(p[1] for p in flight.pieces), signaled=True)
        elif flight.progressed:
            # A short write broke the round (and cancelled what was linked behind it):
            # send the remainder, whose failure names the kernel's reason.
            self._start(flight)
        else:
            i = next(i for i, p in enumerate(flight.pieces) if flight.landed[i] < p[1])
            _, length, offset = flight.pieces[i]
            done = flight.landed[i]
            self._finish(flight, io_error(errno.ENOSPC, "write (no progress)", flight.fd,
                                          offset + done, length - done), signaled=True)

    def _finish(self, flight: _Flight, result, *, signaled: bool) -> None:
        flight.group.work = None
        startable, to_reap, to_wait = self._ledger.finish(flight.group, result)
        if to_reap and not signaled:
            # No completion entry announced this result, so announce it ourselves.
            self._doorbell.ring()
        if to_wait and self._in_kernel:
            lib.lnc_ring_kick(self._ring, _KICK)
        for group in startable:
            self._start(group.work)
        self._ledger.changed.notify_all()

    def _pump(self, done) -> None:
        """Process completions until done() holds. One thread at a time sleeps in
        the kernel; the others sleep on the ledger's condition."""
        while not done():
            if self._in_kernel:
                self._ledger.changed.wait()
                continue
            self._check_open()
            if self._needs_flush or self._parked:
                self._collect()
                if done():
                    return
                if self._needs_flush or self._parked:
                    # The kernel refused queue room for now (EAGAIN/EBUSY): let it breathe.
                    self._lock.release()
                    try:
                        time.sleep(0.001)
                    finally:
                        self._lock.acquire()
                    continue
            self._in_kernel = True
            self._lock.release()
            try:
                rc = lib.lnc_ring_wait(self._ring)
            finally:
                self._lock.acquire()
                self._in_kernel = False
            if rc < 0 and rc != -errno.EINTR:
                raise OSError(-rc, f"{errno.errorcode.get(-rc, -rc)}: waiting for io_uring"
                                   f" completions: {os.strerror(-rc)}")
            self._collect()
