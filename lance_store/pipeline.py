"""The asyncio write pipeline of a topic: groups in flight, confirmed in order.

`Topic.append_async` queues a batch here; a pump task fills the next group's
aligned buffer and submits it while earlier groups are still syncing (up to
`max_in_flight`), and completions arriving on the backend's eventfd publish
each group's batches and resolve their futures in log order.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from .groupfill import Queued
from .segment.header import BATCH_OVERHEAD

MAX_IN_FLIGHT = 2
_new_tuple = tuple.__new__
# A confirmed group with at least this many waiting appends wakes them in two halves.
SPLIT_AT = 8


@dataclass(slots=True)
class _Flight:
    """One submitted group: its buffer, its batches, and who waits for them."""

    ticket: int
    group: object                   # GroupBuffer
    pending: list                   # (offset, ts, key_low) per batch, for the index
    end: int                        # topic offset after the group
    waiters: list = field(default_factory=list)   # (future, AppendResult)
    failed: bool = False


def _resolve(waiters: list) -> None:
    """Hand each waiting append its result (one cancelled meanwhile is skipped)."""
    for future, res in waiters:
        if not future.done():
            future.set_result(res)


class Completions:
    """Dispatches a store's backend completions (one eventfd) to its topics' flights."""

    def __init__(self, backend):
        self.backend = backend
        self.loop: asyncio.AbstractEventLoop | None = None
        self.callbacks: dict[int, object] = {}
        # Pumps of any topic that found every pooled buffer in flight wait here;
        # each completion returns a buffer and wakes them.
        self.buffer_waiters: list[asyncio.Event] = []

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.backend.fileno())
        self.loop = loop
        loop.add_reader(self.backend.fileno(), self._on_ready)

    def expect(self, ticket: int, callback) -> None:
        self.callbacks[ticket] = callback

    def _on_ready(self) -> None:
        for ticket, result in self.backend.reap():
            callback = self.callbacks.pop(ticket, None)
            if callback is not None:
                callback(result)
        waiters, self.buffer_waiters = self.buffer_waiters, []
        for event in waiters:
            event.set()

    def detach(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.backend.fileno())
        self.loop = None


class AsyncAppender:
    """Per topic: the queue of batches, the groups in flight, the pump."""

    def __init__(self, topic, completions: Completions, *, sync: bool, max_in_flight: int = MAX_IN_FLIGHT):
        self.topic = topic
        self.completions = completions
        self.sync = sync
        self.max_in_flight = max_in_flight
        self.queue: deque[Queued] = deque()
        self.flights: deque[_Flight] = deque()
        self._wake: asyncio.Event | None = None
        self._pump: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.flights)

    def enqueue(self, size: int, data, rtype: int, count: int, timestamp_ns: int | None,
                producer_id: int, producer_seq: int) -> asyncio.Future:
        """Queue a batch (`data`/`rtype` as groupfill.Queued reads them)."""
        loop = asyncio.get_running_loop()
        if self.completions.loop is not loop:
            self.completions.attach(loop)
        future = loop.create_future()
        # tuple.__new__ skips the NamedTuple's Python-level constructor.
        self.queue.append(_new_tuple(Queued, (size, future, data, rtype, count, timestamp_ns,
                                              producer_id, producer_seq)))
        if self._pump is None or self._pump.done():
            self._wake = asyncio.Event()
            self._pump = loop.create_task(self._run())
        elif not self._wake.is_set():
            self._wake.set()
        return future

    async def _run(self) -> None:
        topic = self.topic
        while self.queue:
            if len(self.flights) >= self.max_in_flight:
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self.queue[0]
            if not self._head_fits_group():
                # Sealing and oversized batches go through the blocking path,
                # after every group of the segment is confirmed.
                if self.flights:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self.queue.popleft()
                try:
                    result = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: topic.append_queued(head, sync=self.sync))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    if not head.future.done():
                        head.future.set_exception(exc)
                else:
                    if not head.future.done():
                        head.future.set_result(result)
                continue
            if not self._submit_group():
                freed = asyncio.Event()
                self.completions.buffer_waiters.append(freed)
                # A buffer can also come back from a blocking writer on another
                # thread, which rings no completion: look again now and then.
                try:
                    await asyncio.wait_for(freed.wait(), 0.02)
                except asyncio.TimeoutError:
                    pass

    def _submit_group(self, *, more_coming: bool = False) -> bool:
        """Fill one buffer with as many queued batches as fit, and submit it;
        False when no pooled buffer is free.

        A group ends on a block boundary (a padding record) when another is
        likely to follow while it is in flight: batches are left over, a group
        is already in flight, or the caller knows more are coming. Otherwise the
        next group would rewrite its last block and have to wait for it.
        """
        topic = self.topic
        pad = more_coming or bool(self.flights)
        try:
            flight = topic._build_group(self.queue, self.sync, pad=pad)
        except BaseException as exc:  # noqa: BLE001 - every queued batch learns why
            self._fail(exc)
            return True
        if flight is None:
            return False
        self.flights.append(flight)
        self.completions.expect(flight.ticket, lambda result, f=flight: self._done(f, result))
        return True

    def _done(self, flight: _Flight, result) -> None:
        topic = self.topic
        # Groups of one file complete in submission order (the backend's promise).
        assert self.flights and self.flights[0] is flight, "group confirmed out of order"
        self.flights.popleft()
        topic.release_group(flight.group)
        if flight.failed:
            return
        if isinstance(result, BaseException):
            topic._failed = topic._failed or f"write failed: {result}"
            self._fail(result, flight)
            return
        with topic._lock:
            topic._publish(flight.pending, flight.end)
        waiters = flight.waiters
        # Writers woken by this group append again at once. Submitting the first
        # half of them before the rest have run splits them over both groups in
        # flight, so one group's Python work overlaps the other's sync.
        half = len(waiters) // 2 if len(waiters) >= SPLIT_AT else 0
        _resolve(waiters[:half])
        if half:
            asyncio.get_running_loop().call_soon(self._submit_early)
        _resolve(waiters[half:])
        if self._wake is not None:
            self._wake.set()

    def _head_fits_group(self) -> bool:
        """Whether the first queued batch goes into a group (not the blocking path:
        it seals the segment or outgrows a group buffer)."""
        size = BATCH_OVERHEAD + self.queue[0].size
        return not (self.topic.needs_rotation(size) or size > self.topic.group_room())

    def _submit_early(self) -> None:
        """Submit what is queued now if a group may go in flight (else the pump will)."""
        if not self.queue or len(self.flights) >= self.max_in_flight or not self._head_fits_group():
            return
        # The other half of the woken writers append right after this.
        self._submit_group(more_coming=True)

    def _fail(self, exc: BaseException, flight: _Flight | None = None) -> None:
        """A failed group fails itself, every later group and everything queued.

        Later groups stay in `flights` until the backend reports them, so their
        buffers go back to the pool only once the kernel is done with them.
        """
        doomed = ([flight] if flight else []) + list(self.flights)
        for f in doomed:
            f.failed = True
            for future, _ in f.waiters:
                if not future.done():
                    future.set_exception(exc)
        while self.queue:
            q = self.queue.popleft()
            if not q.future.done():
                q.future.set_exception(exc)
        if self._wake is not None:
            self._wake.set()

    async def drain(self) -> None:
        """Wait until everything queued is confirmed (or failed) and no group is in flight."""
        while self.busy:
            futures = [q.future for q in self.queue] + [f for fl in self.flights for f, _ in fl.waiters]
            await asyncio.gather(*futures, return_exceptions=True)
            if self.flights and all(f.done() for f in futures):
                self._wake.clear()
                await self._wake.wait()
