"""Group commit: every batch queued for a topic while its last write runs goes in its next write.

Owns the per-topic queue, the writer threads and the durable/refused outcome of each batch;
what a batch may contain, and who is told, belong to `produce` and the connection.

Each group goes to the store's asyncio write pipeline (`Topic.submit_encoded`):
the store fills aligned buffers and submits them to the write backend while
earlier ones sync (two groups in flight), and reports completions through its
eventfd, so the event loop never blocks on the disk. Batches that arrive while
both groups are in flight wait for the next one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Callable

from lance_store import BatchSpec, Topic

log = logging.getLogger("lance_net.server.ingest")

# A larger group amortises the fdatasync better but holds its first batch's ack longer.
MAX_GROUP_BYTES = 32 * 1024 * 1024
# Groups handed to the store at once: the next one fills while the previous syncs.
MAX_GROUPS_IN_FLIGHT = 2
# A group write slower than this is logged: the disk, not the broker, is then the bottleneck.
SLOW_GROUP_S = 1.0


class Ticket:
    """One batch on its way to disk. Callbacks run on the event loop with the ticket,
    once `error` is settled: None when durable, else the refusal text."""

    __slots__ = ("received", "done", "error", "_callbacks")

    def __init__(self, received: float):
        self.received = received
        self.done = False
        self.error: str | None = None
        self._callbacks: list[Callable[[Ticket], None]] = []

    def add_done_callback(self, fn: Callable[[Ticket], None]) -> None:
        if self.done:
            fn(self)
        else:
            self._callbacks.append(fn)

    def settle(self, error: str | None) -> None:
        self.done = True
        self.error = error
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # one connection's fault must not keep others' acks back
                log.exception("batch outcome callback failed")


def pin_cpus(cpus: tuple[int, ...] = ()) -> None:
    """Pin the calling thread to `cpus` ([numa] cpus), when given."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)  # 0: the calling thread


class GroupCommitter:
    """The ingest queue of one topic."""

    def __init__(self, topic: Topic, metrics, on_durable: Callable[[Topic], None],
                 backpressure_bytes: int, gate: Callable | None = None):
        self.topic = topic
        # L3: durable here is not yet acknowledgeable; the gate settles each ticket once a
        # majority holds its batch (gate(topic, [(ticket, next_offset), ...])).
        self._gate = gate
        self.queued_bytes = 0
        self.high_mark = backpressure_bytes
        self._loop = asyncio.get_running_loop()
        self._metrics = metrics
        self._on_durable = on_durable
        self._queue: list[tuple[BatchSpec, Ticket]] = []
        self._in_flight = 0
        self._scheduled = False
        self._halted = False
        self._refusal: str | None = None
        self._idle: list[asyncio.Future] = []
        self._held: set = set()          # connections paused by backpressure on this topic
        labels = metrics.topic_labels(topic.name)
        self._batches, self._records, self._bytes = labels

    # -- producing side -----------------------------------------------------------------

    def submit(self, spec: BatchSpec, ticket: Ticket) -> None:
        if self._refusal is not None:
            ticket.settle(self._refusal)
            return
        self._queue.append((spec, ticket))
        self.queued_bytes += len(spec.payload)
        if self._in_flight < MAX_GROUPS_IN_FLIGHT and not self._scheduled:
            # Deferred to the end of this loop turn, so every frame parsed from the
            # same socket read joins one group.
            self._scheduled = True
            self._loop.call_soon(self._start)

    @property
    def over_high_mark(self) -> bool:
        return self.queued_bytes > self.high_mark

    def hold(self, connection) -> None:
        """Keep `connection` paused until the queue falls below half the high mark."""
        self._held.add(connection)

    @property
    def idle(self) -> bool:
        """No group is writing, and none will start (the queue is empty, or halted)."""
        return not self._in_flight and (not self._queue or self._halted)

    async def wait_idle(self) -> None:
        if self.idle:
            return
        future = self._loop.create_future()
        self._idle.append(future)
        await future

    def close(self, reason: str) -> None:
        """Refuse queued and later batches with `reason`; a group already writing finishes."""
        self._refusal = reason
        queued, self._queue = self._queue, []
        self.queued_bytes = 0
        for _, ticket in queued:
            ticket.settle(reason)
        self._release_held()
        self._check_idle()

    def halt(self) -> None:
        """Start no further group (hard stop); the queued batches are never acknowledged."""
        self._halted = True
        self._check_idle()

    # -- writer side --------------------------------------------------------------------

    def _start(self) -> None:
        self._scheduled = False
        if self._in_flight >= MAX_GROUPS_IN_FLIGHT or self._halted or not self._queue:
            return
        queue = self._queue
        size = 0
        cut = 0
        for spec, _ in queue:
            size += len(spec.payload)
            cut += 1
            if size >= MAX_GROUP_BYTES:
                break
        group, self._queue = queue[:cut], queue[cut:]
        self.queued_bytes -= size
        self._in_flight += 1
        if self._held and self.queued_bytes <= self.high_mark // 2:
            self._release_held()
        started = time.perf_counter()
        futures = []
        for spec, _ in group:
            try:
                futures.append(self.topic.submit_encoded(spec))
            except Exception as exc:  # refused before queueing (topic read-only, ...)
                failed = self._loop.create_future()
                failed.set_exception(exc)
                futures.append(failed)
        done = asyncio.gather(*futures, return_exceptions=True)
        done.add_done_callback(lambda f: self._finished(group, f, started))
        if self._queue and self._in_flight < MAX_GROUPS_IN_FLIGHT:
            self._start()

    def _finished(self, group: list[tuple[BatchSpec, Ticket]], future: asyncio.Future,
                  started: float) -> None:
        self._in_flight -= 1
        metrics = self._metrics
        outcomes = future.result()
        error = next((r for r in outcomes if isinstance(r, BaseException)), None)
        if error is not None:
            message = f"write failed: {error}"
            log.error("topic %s: %s", self.topic.name, message)
            metrics.write_failures.inc()
            durable = []
            for (_, ticket), outcome in zip(group, outcomes):
                # Batches before the failure in log order are durable: ack them.
                if isinstance(outcome, BaseException):
                    ticket.settle(message)
                elif self._gate is None:
                    ticket.settle(None)
                else:
                    durable.append((ticket, outcome))
            if durable:
                self._settle_durable(durable)
            self._on_durable(self.topic)
        else:
            now = time.perf_counter()
            seconds = now - started
            metrics.group_write_seconds.observe(seconds)
            if seconds > SLOW_GROUP_S:
                log.warning("topic %s: a group write of %d batches took %.1f s", self.topic.name,
                            len(group), seconds)
            metrics.group_batches.observe(len(group))
            self._batches.inc(len(group))
            self._records.inc(sum(spec.record_count for spec, _ in group))
            self._bytes.inc(sum(len(spec.payload) for spec, _ in group))
            observe = metrics.batch_latency_seconds.observe
            for _, ticket in group:
                observe(now - ticket.received)
            self._settle_durable([(ticket, outcome) for (_, ticket), outcome in zip(group, outcomes)])
            self._on_durable(self.topic)
        if self._queue and not self._halted:
            self._start()
        else:
            self._check_idle()

    def _settle_durable(self, durable: list) -> None:
        """Acknowledge durable batches now, or hand them to the gate (L3)."""
        if self._gate is None:
            for ticket, _ in durable:
                ticket.settle(None)
        else:
            self._gate(self.topic, [(ticket, outcome.next_offset) for ticket, outcome in durable])

    def _release_held(self) -> None:
        held, self._held = self._held, set()
        for connection in held:
            connection.release_backpressure(self)

    def _check_idle(self) -> None:
        if self.idle:
            waiters, self._idle = self._idle, []
            for future in waiters:
                if not future.done():
                    future.set_result(None)
