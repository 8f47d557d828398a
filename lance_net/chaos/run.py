"""One chaos run: produce sequence-numbered records at a rate, consume them back, kill the broker.

Owns the three concurrent activities (producing through the idempotent Producer, consuming
from the recorded start offset, and SIGKILLing a spawned node on a schedule), the final drain
and catch-up, and the report; the judging is `ledger`'s, the process `node`'s.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from lance_store.records import HEADER_LEN

from lance_net.client import Admin, BrokerError, ClientError, ConnectionLost, Consumer, Producer
from lance_net.client.options import ClientOptions
from lance_net.protocol import ListOffsets

from .ledger import Ledger, Verdict, sequences_of, stamp
from .cluster import SpawnedCluster
from .node import SpawnedNode

# Records due are sent every tick as one batch: smooth enough for a rate, few enough frames.
TICK_S = 0.01
BATCH_BYTES = 256 * 1024
CONSUMER_WAIT_MS = 200


@dataclass(frozen=True)
class ChaosSettings:
    topic: str = "chaos"
    rate: float = 1000.0            # records per second
    duration_s: float = 10.0
    msg_size: int = 64
    kill_every_s: float | None = None
    drain_timeout_s: float = 30.0


@dataclass
class ChaosReport:
    """What a run did and what came back; `verdict` decides the exit code."""

    run_id: int
    endpoint: str
    topic: str
    topic_id: int
    start_offset: int
    settings: ChaosSettings
    verdict: Verdict
    elapsed_s: float = 0.0
    failed: int = 0
    drained: bool = True
    caught_up: bool = True
    kills: int = 0
    kill_to_ack_s: list[float] = field(default_factory=list)
    producer_reconnects: int = 0
    batches_resent: int = 0
    consumer_retries: int = 0
    producer_error: str | None = None
    consumer_error: str | None = None

    @property
    def kill_to_ack_median_s(self) -> float | None:
        return statistics.median(self.kill_to_ack_s) if self.kill_to_ack_s else None

    def as_dict(self) -> dict:
        v = self.verdict
        s = self.settings
        median = self.kill_to_ack_median_s
        return {
            "ok": v.ok, "run_id": f"{self.run_id:016x}", "endpoint": self.endpoint,
            "topic": self.topic, "topic_id": self.topic_id, "start_offset": self.start_offset,
            "rate": s.rate, "duration_s": s.duration_s, "msg_size": s.msg_size,
            "elapsed_s": round(self.elapsed_s, 3),
            "sent": v.sent, "produced": v.acknowledged, "failed": self.failed,
            "produced_per_s": round(v.acknowledged / s.duration_s, 1),
            "consumed": v.consumed, "distinct_consumed": v.distinct_consumed,
            "gaps": v.gaps, "duplicates": v.duplicates, "out_of_order": v.out_of_order,
            "unacked_consumed": v.unacked_consumed, "first_gaps": v.first_gaps,
            "drained": self.drained, "caught_up": self.caught_up,
            "kill_every_s": s.kill_every_s, "kills": self.kills,
            "kill_to_ack_median_s": None if median is None else round(median, 3),
            "kill_to_ack_s": [round(x, 3) for x in self.kill_to_ack_s],
            "producer_reconnects": self.producer_reconnects,
            "batches_resent": self.batches_resent, "consumer_retries": self.consumer_retries,
            "producer_error": self.producer_error, "consumer_error": self.consumer_error,
        }


class ChaosRun:
    """`await ChaosRun(endpoint, options, settings, node).run()` -> ChaosReport.

    With a node (one this process spawned) and settings.kill_every_s, the node is SIGKILLed
    every kill_every_s seconds and started again on the same port and data directory; a kill
    waits for the first ack after the previous restart, or one more period without it.
    """

    def __init__(self, endpoint: str, options: ClientOptions, settings: ChaosSettings,
                 node: SpawnedNode | SpawnedCluster | None = None, echo: Callable[[str], None] = lambda s: None):
        if settings.kill_every_s is not None and node is None:
            raise ValueError("kill_every_s: killing needs a node this run started (spawn one)")
        self.endpoint = endpoint
        self.options = options
        self.settings = settings
        self.node = node
        self.echo = echo
        self.run_id = int.from_bytes(os.urandom(8), "big")
        self.ledger = Ledger()
        self.failed = 0
        self.kill_to_ack: list[float] = []
        self.consumer_retries = 0
        self.consumer_error: str | None = None
        self._acks_pending: set[asyncio.Future] = set()
        self._restarted_at: float | None = None   # ready time of the latest restart
        self._killed_at = 0.0
        self._recovered = asyncio.Event()
        self._stopping = asyncio.Event()
        self._catch_up_to: int | None = None

    async def run(self) -> ChaosReport:
        s = self.settings
        async with Admin(self.endpoint, self.options) as admin:
            info = await admin.create_topic(s.topic)
            topic_id = int(info["id"])
            start = (await admin.list_offsets(topic_id, ListOffsets.LATEST)).offset
        self.echo(f"chaos: run {self.run_id:016x}, topic {s.topic} (id {topic_id}) from offset "
                  f"{start}, {s.rate:g} msg/s x {s.msg_size} B for {s.duration_s:g} s"
                  + (f", SIGKILL every {s.kill_every_s:g} s" if s.kill_every_s else ""))
        producer = Producer(self.endpoint, topic_id, linger_ms=0, options=self.options)
        consumer = Consumer(self.endpoint, topic_id, start_from=start,
                            max_wait_ms=CONSUMER_WAIT_MS, options=self.options)
        await producer.start()
        await consumer.start()
        report = ChaosReport(self.run_id, self.endpoint, s.topic, topic_id, start, s,
                             verdict=self.ledger.verdict())
        began = time.monotonic()
        consuming = asyncio.ensure_future(self._consume(consumer))
        killing = asyncio.ensure_future(self._kill_on_schedule(began)) \
            if s.kill_every_s else None
        try:
            try:
                await self._produce(producer, began + s.duration_s)
            except ClientError as exc:
                report.producer_error = str(exc)
            self._stopping.set()
            if killing is not None:
                await killing              # a restart under way finishes first
            report.drained = await self._drain(producer)
            try:
                self._catch_up_to = await self._high_watermark(topic_id)
            except ClientError as exc:
                self.consumer_error = f"reading the high watermark to catch up to: {exc}"
                consuming.cancel()
            report.caught_up = await _within(consuming, s.drain_timeout_s) \
                and self.consumer_error is None
        finally:
            self._stopping.set()
            for task in (consuming, killing):
                if task is not None and not task.done():
                    task.cancel()
            await producer.close(timeout=0)
            await consumer.close()
        report.elapsed_s = time.monotonic() - began
        report.verdict = self.ledger.verdict()
        report.failed = self.failed
        report.kills = self.node.kills if self.node is not None else 0
        report.kill_to_ack_s = list(self.kill_to_ack)
        report.producer_reconnects = producer.stats.reconnects
        report.batches_resent = producer.stats.resent
        report.consumer_retries = self.consumer_retries
        report.consumer_error = self.consumer_error
        return report

    # ------------------------------------------------------------ producing

    async def _produce(self, producer: Producer, deadline: float) -> None:
        s = self.settings
        per_batch = max(1, BATCH_BYTES // (s.msg_size + HEADER_LEN))
        began = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            due = int(s.rate * (now - began)) + 1 - self.ledger.sent
            while due > 0:
                await producer.ready()
                count = min(due, per_batch)
                first = self.ledger.sent
                delivery = producer.send_payload(stamp(self.run_id, first, count, s.msg_size),
                                                 count)
                self.ledger.take(count)
                acked = asyncio.ensure_future(delivery.acked())
                self._acks_pending.add(acked)
                acked.add_done_callback(lambda f, first=first, count=count:
                                        self._on_ack(f, first, count))
                due -= count
            await asyncio.sleep(TICK_S)

    def _on_ack(self, future: asyncio.Future, first: int, count: int) -> None:
        self._acks_pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            self.failed += count
            return
        self.ledger.acknowledged(first, count)
        restarted = self._restarted_at
        if restarted is not None and not self._recovered.is_set():
            now = time.monotonic()
            if now >= restarted:
                self.kill_to_ack.append(now - self._killed_at)
                self._recovered.set()

    async def _drain(self, producer: Producer) -> bool:
        """Every batch sent acknowledged or failed within the drain timeout."""
        try:
            await asyncio.wait_for(producer.flush(), self.settings.drain_timeout_s)
        except asyncio.TimeoutError:
            return False
        if self._acks_pending:
            await asyncio.wait(list(self._acks_pending), timeout=self.settings.drain_timeout_s)
        return True

    async def _high_watermark(self, topic_id: int) -> int:
        deadline = time.monotonic() + self.settings.drain_timeout_s
        attempt = 0
        while True:
            try:
                async with Admin(self.endpoint, self.options) as admin:
                    return (await admin.list_offsets(topic_id, ListOffsets.LATEST)).offset
            except (ConnectionLost, BrokerError) as exc:
                if isinstance(exc, BrokerError) and not exc.retryable:
                    raise
                if time.monotonic() > deadline:
                    raise
                attempt += 1
                await asyncio.sleep(self.options.backoff.delay(attempt))

    # ------------------------------------------------------------ consuming

    async def _consume(self, consumer: Consumer) -> None:
        """Read from the start offset until the catch-up target (set after the drain).

        A failure that retrying cannot cure ends consuming and is reported: what was not read
        by then counts as gaps.
        """
        attempt = 0
        while True:
            target = self._catch_up_to
            if target is not None and consumer.position >= target and not self.ledger.verdict().gaps:
                # Past the end read after the drain, and every acknowledged record is in: a
                # follower's end can trail the leader's last acks by a heartbeat, so the
                # end alone does not say the consumer saw them (the drain timeout bounds this).
                return
            try:
                batch = await consumer.poll_batch()
            except (ConnectionLost, OSError, BrokerError) as exc:
                if isinstance(exc, BrokerError) and not exc.retryable:
                    self.consumer_error = str(exc)
                    return
                # The broker is down or restarting: the position stays, so ask again later.
                self.consumer_retries += 1
                attempt += 1
                await asyncio.sleep(self.options.backoff.delay(attempt))
                continue
            except ClientError as exc:
                self.consumer_error = str(exc)
                return
            attempt = 0
            self.ledger.consumed(sequences_of(batch, self.run_id))

    # ------------------------------------------------------------ killing

    async def _kill_on_schedule(self, began: float) -> None:
        every = self.settings.kill_every_s
        node = self.node
        next_kill = began + every
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(),
                                       max(0.0, next_kill - time.monotonic()))
                return
            except asyncio.TimeoutError:
                pass
            pid = node.process.pid
            self._recovered.clear()
            self._restarted_at = None
            self._killed_at = time.monotonic()
            node.kill()
            await node.start()
            self._restarted_at = time.monotonic()
            self.echo(f"chaos: SIGKILL {pid}, restarted as {node.restarted_pid} in "
                      f"{self._restarted_at - self._killed_at:.2f} s (kill {node.kills})")
            # The next kill waits for an ack after this restart (so each kill is measured and
            # the clients make progress between kills), for at most one period.
            stop = asyncio.ensure_future(self._stopping.wait())
            recovered = asyncio.ensure_future(self._recovered.wait())
            await asyncio.wait({stop, recovered}, timeout=every,
                               return_when=asyncio.FIRST_COMPLETED)
            next_kill = self._killed_at + every
            for waiter in (stop, recovered):
                waiter.cancel()
            if self._stopping.is_set():
                return


async def _within(task: asyncio.Future, timeout: float) -> bool:
    """Whether `task` ends within `timeout` seconds (it is cancelled otherwise); its error raises."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        return False
    if task.cancelled():
        return False
    task.result()
    return True
