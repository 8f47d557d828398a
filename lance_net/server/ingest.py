"""Group commit: every batch queued for a topic while its last write runs goes in its next write.

Owns the per-topic queue, the writer threads and the durable/refused outcome of each batch;
what a batch may contain, and who is told, belong to `produce` and the connection.

One group at a time per topic: `Topic.append_encoded(group)` is one write and
one fdatasync for every batch in it, run on a writer thread so the event loop
keeps reading sockets; batches that arrive meanwhile wait for the next group.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from lance_store import BatchSpec, Topic

log = logging.getLogger("lance_net.server.ingest")

# A larger group amortises the fdatasync better but holds its first batch's ack longer.
MAX_GROUP_BYTES = 32 * 1024 * 1024
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


def writer_pool(threads: int, cpus: tuple[int, ...] = ()) -> ThreadPoolExecutor:
    """The threads that run group writes, pinned to `cpus` ([numa] cpus) when given."""

    def pin() -> None:
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)  # 0: the calling thread

    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lance-writer",
                              initializer=pin)


def _write_group(topic: Topic, specs: list[BatchSpec]) -> float:
    started = time.perf_counter()
    topic.append_encoded(specs)
    return time.perf_counter() - started


class GroupCommitter:
    """The ingest queue of one topic."""

    def __init__(self, topic: Topic, executor: ThreadPoolExecutor, metrics,
                 on_durable: Callable[[Topic], None], backpressure_bytes: int):
        self.topic = topic
        self.queued_bytes = 0
        self.high_mark = backpressure_bytes
        self._loop = asyncio.get_running_loop()
        self._executor = executor
        self._metrics = metrics
        self._on_durable = on_durable
        self._queue: list[tuple[BatchSpec, Ticket]] = []
        self._busy = False
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
        if not self._busy and not self._scheduled:
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
        return not self._busy and (not self._queue or self._halted)

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
        if self._busy or self._halted or not self._queue:
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
        self._busy = True
        if self._held and self.queued_bytes <= self.high_mark // 2:
            self._release_held()
        future = self._loop.run_in_executor(self._executor, _write_group, self.topic,
                                            [spec for spec, _ in group])
        future.add_done_callback(lambda f: self._finished(group, f))

    def _finished(self, group: list[tuple[BatchSpec, Ticket]], future: asyncio.Future) -> None:
        self._busy = False
        metrics = self._metrics
        error = future.exception()
        if error is not None:
            message = f"write failed: {error}"
            log.error("topic %s: %s", self.topic.name, message)
            metrics.write_failures.inc()
            for _, ticket in group:
                ticket.settle(message)
        else:
            now = time.perf_counter()
            seconds = future.result()
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
                ticket.settle(None)
            self._on_durable(self.topic)
        if self._queue and not self._halted:
            self._start()
        else:
            self._check_idle()

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
