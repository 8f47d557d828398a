"""The interface every write backend implements, and what its implementations share.

A backend only moves whole 4 KiB-aligned blocks to a file and makes them
durable; the segment writer and the WAL own offsets, tail blocks and batches.
Shared here: the aligned buffer pool, the doorbell fd an event loop watches,
and the ledger that hands group results back per file in submission order.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from abc import ABC, abstractmethod
from collections import deque

BLOCK = 4096
# A group with no bytes is a pure sync: it covers every earlier write to its file.
_WHOLE_FILE = 1 << 64


def align_up(n: int, block: int = BLOCK) -> int:
    return (n + block - 1) & ~(block - 1)


def io_error(err: int, call: str, fd: int, offset: int, length: int) -> OSError:
    """An OSError that keeps the kernel's errno and names it, the call and the range."""
    name = errno.errorcode.get(err, str(err))
    detail = f"{name}: {call} of {length} bytes at offset {offset} on fd {fd}: {os.strerror(err)}"
    if err == errno.EINVAL and _is_direct(fd):
        detail += (f" (the file is open with O_DIRECT: offset, length and buffer address must be"
                   f" multiples of {BLOCK}; offset % {BLOCK} = {offset % BLOCK},"
                   f" length % {BLOCK} = {length % BLOCK})")
    return OSError(err, detail)


def _is_direct(fd: int) -> bool:
    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))
    except OSError:
        return False


class WriteBackend(ABC):
    """Moves groups of buffers to files, blocking or asynchronously.

    Blocking: `write(fd, offset, views, sync=True)` returns only when the bytes
    are on disk (data and size), or raises OSError.

    Asynchronous: `submit(...)` returns a ticket at once; when `fileno()` turns
    readable, `reap()` returns `(ticket, result)` pairs where result is the
    number of bytes written or the OSError that failed the group. Results of
    one file come back in submission order, so a group is reported only after
    every earlier group of its file; overlapping groups of one file reach the
    disk in submission order too. The buffers of a group must stay alive and
    unchanged until its ticket is reaped. `wait(ticket)` blocks for one ticket
    instead (its result is then not returned by `reap`); call it only for
    tickets that no other thread reaps meanwhile (`write` and `sync` reserve
    theirs at submission, so they mix safely with a reaping event loop).
    """

    name: str = "?"
    # whether this backend wants files opened with O_DIRECT and aligned writes
    direct: bool = True

    @abstractmethod
    def write(self, fd: int, offset: int, views: list, *, sync: bool) -> None:
        """Write the buffers back to back at `offset` (all aligned when direct)."""

    @abstractmethod
    def sync(self, fd: int) -> None:
        """Make everything written to fd durable (fdatasync)."""

    @abstractmethod
    def submit(self, fd: int, offset: int, views: list, *, sync: bool) -> int:
        """Start one group (views written back to back at offset, then synced when
        asked); returns its ticket. A group without views and with sync is a sync
        of everything written to fd before it."""

    @abstractmethod
    def reap(self) -> list:
        """Results that became ready: `[(ticket, bytes_written | OSError), ...]`."""

    @abstractmethod
    def wait(self, ticket: int) -> int:
        """Block until the group is done; returns its bytes written or raises its OSError."""

    @abstractmethod
    def fileno(self) -> int:
        """The fd that turns readable when `reap` may have results (an eventfd)."""

    @property
    def eventfd(self) -> int:
        return self.fileno()

    def register_buffers(self, pool: "BufferPool") -> bool:
        """Let the kernel pin the pool's buffers, if this backend can use that;
        returns whether it did. Writes from other memory keep working."""
        return False

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

    def take(self, *, block: bool = True) -> mmap.mmap | None:
        """A free buffer; waits for one, or with block=False returns None (an
        event loop must never wait here: the buffer it waits for comes back
        through a completion that loop itself has to process)."""
        with self._cond:
            while not self._free:
                if not block:
                    return None
                self._cond.wait()
            return self._free.pop()

    def give(self, buf: mmap.mmap) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify()

    def buffers(self) -> list:
        """Every buffer of the pool (for io_uring_register_buffers)."""
        return list(self._all)


class Doorbell:
    """A non-blocking eventfd (a pipe where eventfd is missing) that says "reap now"."""

    def __init__(self):
        if hasattr(os, "eventfd"):
            self._read_fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.is_eventfd = True
        else:  # pragma: no cover - platforms without eventfd
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
            self.is_eventfd = False

    def fileno(self) -> int:
        return self._read_fd

    def ring(self) -> None:
        try:
            if self.is_eventfd:
                os.eventfd_write(self._write_fd, 1)
            else:  # pragma: no cover
                os.write(self._write_fd, b"\1")
        except BlockingIOError:  # already ringing as loud as it gets
            pass

    def drain(self) -> None:
        try:
            if self.is_eventfd:
                os.eventfd_read(self._read_fd)
            else:  # pragma: no cover
                while os.read(self._read_fd, 4096):
                    pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._read_fd < 0:
            return
        os.close(self._read_fd)
        if self._write_fd != self._read_fd:  # pragma: no cover
            os.close(self._write_fd)
        self._read_fd = self._write_fd = -1


class Group:
    """One submitted group as the ledger sees it; `work` is the backend's own state."""

    __slots__ = ("ticket", "fd", "start", "end", "done", "result", "blocked", "work")

    def __init__(self, ticket: int, fd: int, start: int, end: int):
        self.ticket = ticket
        self.fd = fd
        self.start = start
        self.end = end
        self.done = False
        self.result = None
        self.blocked = False
        self.work = None

    def overlaps(self, other: "Group") -> bool:
        return self.start < other.end and other.start < self.end


class GroupLedger:
    """Tickets of submitted groups, released per file in submission order.

    Every method expects the caller to hold `lock`; `changed` is notified by
    the backend when results arrive, for threads blocked in `wait`.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.in_flight = 0
        self._next_ticket = 1
        self._files: dict[int, deque] = {}
        self._ready: list = []
        self._claims: dict[int, tuple] = {}  # ticket -> () while pending, (result,) when done

    def open(self, fd: int, offset: int, length: int, *, claim: bool = False) -> Group:
        """Record a new group; `blocked` says it overlaps an unfinished earlier one.
        `claim` reserves its result for `wait` from the start (blocking writes), so
        that a thread reaping meanwhile never takes it."""
        start, end = (offset, offset + length) if length else (0, _WHOLE_FILE)
        group = Group(self._next_ticket, fd, start, end)
        self._next_ticket += 1
        queue = self._files.setdefault(fd, deque())
        group.blocked = any(not g.done and g.overlaps(group) for g in queue)
        queue.append(group)
        self.in_flight += 1
        if claim:
            self._claims[group.ticket] = ()
        return group

    def busy(self, fd: int) -> bool:
        return fd in self._files

    def finish(self, group: Group, result) -> tuple[list, bool, bool]:
        """Record a group's result. Returns the groups of its file that may start
        now, whether results were released to `reap`, and whether to a `wait`."""
        group.done = True
        group.result = result
        self.in_flight -= 1
        queue = self._files[group.fd]
        to_reap = to_wait = False
        while queue and queue[0].done:
            head = queue.popleft()
            if head.ticket in self._claims:
                self._claims[head.ticket] = (head.result,)
                to_wait = True
            else:
                self._ready.append((head.ticket, head.result))
                to_reap = True
        if not queue:
            del self._files[group.fd]
            return [], to_reap, to_wait
        startable = []
        earlier: list = []
        for g in queue:
            if g.blocked and not any(not e.done and e.overlaps(g) for e in earlier):
                g.blocked = False
                startable.append(g)
            earlier.append(g)
        return startable, to_reap, to_wait

    def take_ready(self) -> list:
        ready, self._ready = self._ready, []
        return ready

    def claim(self, ticket: int) -> None:
        """Reserve a ticket's result for `wait`, even when it is already released."""
        if ticket in self._claims:
            return
        for i, (t, result) in enumerate(self._ready):
            if t == ticket:
                del self._ready[i]
                self._claims[ticket] = (result,)
                return
        if not any(g.ticket == ticket for q in self._files.values() for g in q):
            raise ValueError(f"ticket {ticket}: not in flight (never issued, or already reaped)")
        self._claims[ticket] = ()

    def released(self, ticket: int) -> bool:
        """Whether a claimed ticket's result has arrived."""
        return bool(self._claims[ticket])

    def take_claimed(self, ticket: int) -> tuple[bool, object]:
        """(True, result) once the claimed ticket is released, else (False, None)."""
        state = self._claims[ticket]
        if not state:
            return False, None
        del self._claims[ticket]
        return True, state[0]


def result_or_raise(result) -> int:
    if isinstance(result, BaseException):
        raise result
    return result
