"""The producer: records into batches, batches into pipelined Ingest frames, acks into deliveries.

Owns batching (size and linger), the in-flight window and its reaction to Backpressure, retries
across lost connections and redirects, and idempotent sequence numbers; where acknowledged
batches landed is found by `locator`.

The rules
---------
1. `send()` appends a record to the open batch: O(1) Python work, no I/O. A batch is sealed
   (encoded once into TLV) when it reaches `batch_bytes` or `linger_ms` after its first record.
2. Sealed batches go out in order as Ingest frames, at most `window` unacknowledged at a time.
   The window starts at `max_in_flight`; a Backpressure frame halves it, and every ack
   grows it by one again, up to `max_in_flight`.
3. Acks arrive in order. With idempotence (the default) a batch's id is the producer's
   sequence number; after a lost connection or a redirect every unacknowledged batch is sent
   again with the same sequence, and the broker acknowledges without writing again what it
   already has. Batches after a gap (a batch the broker refused) are renumbered, which is safe
   because the broker wrote none of them.
4. A batch that is not acknowledged within `delivery_timeout_s` of being sealed fails with
   DeliveryTimeout; a refusal that sending again cannot fix fails it with the BrokerError.
"""
from __future__ import annotations

import asyncio
import collections
import time
from array import array
from dataclasses import dataclass
from typing import Any, Sequence

from lance_store.records import MAX_VALUE_LEN, RAW, encode, encode_uniform
from lance_store.sortkey import SortKey

from lance_net.protocol import (
    FORWARD_FAILED, INVALID_CLIENT_COMMAND, NOT_LEADER, OUT_OF_ORDER_SEQUENCE, QUORUM_NOT_REACHED,
    DEFAULT_MAX_PAYLOAD_SIZE, ErrorResponse, Ingest, InitProducer, ProducerResponse,
)

from .admin import Admin, TopicRef
from .errors import (
    BrokerError, ClientError, ConnectionLost, DeliveryTimeout, NotLeader, UnexpectedReply,
    broker_error,
)
from .link import Link, open_link
from .locator import OffsetLocator
from .options import DEFAULT_ENDPOINT, ClientOptions, split_options

_TLV_HEADER = 5
# Half the frame limit, so that a batch plus one more record below the limit always fits; a
# stored batch also needs its header and a fetch prefix inside the frame limit.
MAX_BATCH_BYTES = DEFAULT_MAX_PAYLOAD_SIZE // 2
_RESEND_CODES = frozenset({NOT_LEADER, FORWARD_FAILED, QUORUM_NOT_REACHED, OUT_OF_ORDER_SEQUENCE})


class BufferFull(ClientError):
    """More than `max_buffer_bytes` of sealed batches wait to be sent: await `producer.ready()`."""


class ProducerClosed(ClientError):
    """send() after close(), or a delivery abandoned because the producer closed."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where a record landed. offset and sortkey are None when the broker cannot tell
    (a producer without idempotence, as against upstream servers)."""

    offset: int | None
    sortkey: SortKey | None
    sequence: int
    index: int


@dataclass(frozen=True, slots=True)
class BatchAck:
    """An acknowledged batch: its id (sequence), size, and where it landed when known."""

    sequence: int
    record_count: int
    offset: int | None
    sortkey: SortKey | None
    latency_s: float


class _Batch:
    """One batch from its first record to its ack."""

    __slots__ = ("owner", "records", "mixed", "size", "future", "sequence", "payload",
                 "record_count", "sealed_at", "sent_at", "timestamp_ns", "latency_s",
                 "offset", "first_ts", "first_key", "record_offsets", "__weakref__")

    def __init__(self, owner: Producer, future: asyncio.Future):
        self.owner = owner
        self.records: list | None = []
        self.mixed = False
        self.size = 0
        self.future = future
        self.sequence = 0
        self.payload: bytes = b""
        self.record_count = 0
        self.sealed_at = 0.0
        self.sent_at = 0.0
        self.timestamp_ns = 0
        self.latency_s = 0.0
        self.offset: int | None = None
        self.first_ts = 0
        self.first_key = 0
        self.record_offsets = None

    def ack(self) -> BatchAck:
        sortkey = SortKey(self.first_ts, self.first_key) if self.offset is not None else None
        return BatchAck(self.sequence, self.record_count, self.offset, sortkey, self.latency_s)


class Delivery:
    """The future outcome of one send(): `await delivery` gives a Delivered (located offset and
    SortKey); `await delivery.acked()` only waits until the batch is durable."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int):
        self._batch = batch
        self._index = index

    def __await__(self):
        return self._delivered().__await__()

    async def _delivered(self) -> Delivered:
        batch = self._batch
        await batch.future
        return await batch.owner._locate_record(batch, self._index)

    async def acked(self) -> BatchAck:
        """The batch's ack, once the broker made it durable."""
        await self._batch.future
        return self._batch.ack()

    def done(self) -> bool:
        return self._batch.future.done()

    def exception(self) -> BaseException | None:
        return self._batch.future.exception()

    @property
    def sequence(self) -> int:
        """The batch id (producer sequence); 0 until the batch is sealed."""
        return self._batch.sequence

    @property
    def index(self) -> int:
        return self._index


class BatchDelivery:
    """The future outcome of send_batch()/send_payload(): awaiting it gives the BatchAck,
    with the batch's offset and first SortKey located."""

    __slots__ = ("_batch",)

    def __init__(self, batch: _Batch):
        self._batch = batch

    def __await__(self):
        return self._located().__await__()

    async def _located(self) -> BatchAck:
        batch = self._batch
        await batch.future
        await batch.owner._locate(batch)
        return batch.ack()

    async def acked(self) -> BatchAck:
        await self._batch.future
        return self._batch.ack()

    def done(self) -> bool:
        return self._batch.future.done()


@dataclass
class ProducerStats:
    """Counters of one producer; ack latencies are kept only with track_latency=True."""

    batches_sent: int = 0
    batches_acked: int = 0
    records_acked: int = 0
    bytes_acked: int = 0
    resent: int = 0
    reconnects: int = 0
    backpressure: int = 0
    smallest_window: int = 0
    failed: int = 0
    latencies_s: array | None = None


class Producer:
    """Produces records to one topic through one connection (asyncio).

        async with Producer("127.0.0.1:1992", "events", create_topic=True) as producer:
            delivery = producer.send(b"hello")
            print(await delivery)          # Delivered(offset=..., sortkey=..., ...)

    Every option of ClientOptions (dialect, ssl, token, ...) may be given as a keyword.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, topic: TopicRef = "", *,
                 create_topic: bool = False, idempotent: bool = True,
                 batch_bytes: int = 256 * 1024, linger_ms: float = 2.0, max_in_flight: int = 8,
                 max_buffer_bytes: int = 64 * 1024 * 1024, delivery_timeout_s: float = 120.0,
                 track_latency: bool = False, options: ClientOptions | None = None,
                 **option_overrides: Any):
        self.options = split_options(options, option_overrides)
        if option_overrides:
            raise TypeError(f"Producer: unexpected arguments {sorted(option_overrides)}")
        if topic == "" or topic is None:
            raise ValueError("topic: expected a topic name or id, found none")
        if not 0 < batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_bytes: expected 1..{MAX_BATCH_BYTES}, found {batch_bytes}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight: expected at least 1, found {max_in_flight}")
        # `endpoint` may list a cluster's nodes (comma-separated): the seeds to find the
        # leader again from when the node in use is lost. self.endpoint is the node in use.
        self.seeds = endpoint
        self.endpoint = endpoint
        self.topic = topic
        self.create_topic = create_topic
        self.idempotent = idempotent
        self.batch_bytes = batch_bytes
        self.linger_s = linger_ms / 1000.0
        self.max_in_flight = max_in_flight
        self.max_buffer_bytes = max_buffer_bytes
        self.delivery_timeout_s = delivery_timeout_s
        self.stats = ProducerStats(latencies_s=array("d") if track_latency else None)
        self.topic_id = 0
        self.topic_info: dict | None = None
        self.producer_id = 0
        self._redirected = False
        self.window = max_in_flight
        # Records above this size would overflow the payload limit in a non-empty batch.
        self._big = DEFAULT_MAX_PAYLOAD_SIZE - batch_bytes - _TLV_HEADER - 1024
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None
        self._open: _Batch | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._queue: collections.deque[_Batch] = collections.deque()  # sealed, not sent
        self._queued_bytes = 0
        self._inflight: collections.deque[_Batch] = collections.deque()
        self._next_id = 1
        self._reconnecting: asyncio.Task | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._idle: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._started = False
        self._closed = False
        self._fatal: BaseException | None = None
        self.last_error: BaseException | None = None
        self.locator: OffsetLocator | None = None

    # ------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> Producer:
        """Connect, find (or create) the topic, and register the producer id."""
        if self._started:
            return self
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        admin = Admin(self.endpoint, self.options)
        try:
            self.topic_info = await admin.resolve_topic(self.topic, create=self.create_topic)
            self.topic_id = int(self.topic_info["id"])
            # Everything this producer writes lands at or after today's high watermark, so
            # locating acknowledged batches starts reading there.
            try:
                high = (await admin.list_offsets(self.topic_id, (1 << 64) - 1)).offset
            except BrokerError as exc:
                if exc.message != INVALID_CLIENT_COMMAND:
                    raise
                high = None  # an upstream server: nothing to locate batches with
            self.endpoint = admin.session.endpoint  # the leader, after redirects
        finally:
            await admin.close()
        await self._first_connect()
        if self.producer_id and high is not None:
            self.locator = OffsetLocator(self.endpoint, self.options, self.topic_id,
                                         self.producer_id, high, seeds=self.seeds)
        self._started = True
        return self

    async def _first_connect(self) -> None:
        """`_connect`, retrying what a cluster in the middle of an election answers (a leader
        not writable yet, no leader known, a node gone with seeds left) for failover_timeout_s."""
        deadline = self._loop.time() + self.options.failover_timeout_s
        attempt = 0
        while True:
            try:
                return await self._connect()
            except (BrokerError, ConnectionLost) as exc:
                if isinstance(exc, BrokerError) and not exc.retryable:
                    raise
                if isinstance(exc, ConnectionLost):
                    if "," not in self.seeds:
                        raise
                    self.endpoint = self.seeds
                if self._loop.time() >= deadline:
                    raise
            attempt += 1
            await asyncio.sleep(self.options.backoff.delay(attempt))

    async def _connect(self) -> None:
        redirects = 0
        while True:
            link = await open_link(self.endpoint, self.options)
            try:
                await self._register(link)
            except NotLeader as exc:
                await link.close()
                if exc.address is None or redirects >= self.options.max_redirects:
                    raise
                redirects += 1
                self.endpoint = exc.address
                continue
            except BaseException:
                await link.close()
                raise
            link.listener = self
            self._link = link
            return

    async def _register(self, link: Link) -> None:
        """InitProducer on a fresh link; renumber what waits to be resent."""
        if not self.idempotent:
            return
        try:
            reply = await link.request(InitProducer(self.producer_id, self.topic_id))
        except BrokerError as exc:
            if exc.message == INVALID_CLIENT_COMMAND and not self.producer_id:
                # An upstream server: no idempotence there; batches get plain ids.
                self.idempotent = False
                return
            raise
        if type(reply) is not ProducerResponse:
            raise UnexpectedReply("InitProducer", "ProducerResponse", reply)
        if self.producer_id and reply.producer_id != self.producer_id:
            # The broker forgot this id: what it wrote under the old one cannot be
            # recognised any more, so duplicates of unacknowledged batches are possible.
            self.producer_id = reply.producer_id
            if self.locator is not None:
                self.locator.producer_id = reply.producer_id
        self.producer_id = reply.producer_id
        self._renumber(reply.last_seq)

    def _renumber(self, last_seq: int) -> None:
        nxt = last_seq + 1
        for batch in self._queue:
            if batch.sequence > last_seq:
                batch.sequence = nxt
                nxt += 1
        self._next_id = nxt

    async def flush(self) -> None:
        """Seal the open batch and wait until every batch so far is acknowledged or failed."""
        self._check_started()
        if self._open is not None:
            self._seal(self._open)
        while self._queue or self._inflight:
            self._idle.clear()
            await self._idle.wait()

    async def ready(self) -> None:
        """Wait until send() will not raise BufferFull."""
        while self._queued_bytes > self.max_buffer_bytes and self._fatal is None:
            self._room.clear()
            await self._room.wait()

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to `timeout` seconds), then close the connection; unacknowledged batches fail."""
        if self._closed:
            return
        if self._started:
            try:
                await asyncio.wait_for(self.flush(), timeout)
            except asyncio.TimeoutError:
                pass
        self._closed = True
        self._fail_all(ProducerClosed("the producer closed before the batch was acknowledged"))
        for handle in (self._linger, self._watchdog):
            if handle is not None:
                handle.cancel()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        link, self._link = self._link, None
        if link is not None:
            link.listener = None
            await link.close()
        if self.locator is not None:
            await self.locator.close()

    def _check_started(self) -> None:
        if not self._started:
            raise ClientError("the producer is not started: use `await producer.start()` "
                              "or `async with Producer(...)`")

    # ------------------------------------------------------------ sending

    def send(self, value, rtype: int = RAW) -> Delivery:
        """Queue one record: bytes (of type `rtype`) or a (type, value) pair. No I/O here."""
        batch = self._open
        if batch is None:
            batch = self._new_batch()
        if rtype or type(value) is tuple:
            value, n = self._typed(batch, value, rtype)
        else:
            n = len(value)
        if n > self._big:
            batch = self._big_record(batch, n)
        records = batch.records
        records.append(value)
        size = batch.size + n + _TLV_HEADER
        batch.size = size
        if size >= self.batch_bytes:
            self._seal(batch)
        return Delivery(batch, len(records) - 1)

    def send_batch(self, values: Sequence, rtype: int = RAW, *,
                   timestamp_ns: int = 0) -> BatchDelivery:
        """Send `values` as exactly one batch (one Ingest frame), after any open batch."""
        if rtype != RAW or any(type(v) is tuple for v in values):
            payload, count = encode([v if type(v) is tuple else (rtype, v) for v in values])
        else:
            payload, count = encode_uniform(values)
        return self.send_payload(payload, count, timestamp_ns=timestamp_ns)

    def send_payload(self, payload: bytes, record_count: int, *,
                     timestamp_ns: int = 0) -> BatchDelivery:
        """Send already-encoded TLV records as one batch; the broker checks them."""
        if len(payload) > DEFAULT_MAX_PAYLOAD_SIZE:
            raise ValueError(f"payload: expected at most {DEFAULT_MAX_PAYLOAD_SIZE} bytes, "
                             f"found {len(payload)}")
        if self._open is not None:
            self._seal(self._open)
        self._admit()
        batch = _Batch(self, self._loop.create_future())
        batch.records = None
        batch.payload = payload
        batch.record_count = record_count
        batch.timestamp_ns = timestamp_ns
        self._enqueue(batch)
        return BatchDelivery(batch)

    async def send_wait(self, value, rtype: int = RAW) -> Delivered:
        """send() that waits for room first, then for the record's delivery."""
        await self.ready()
        return await self.send(value, rtype)

    def _admit(self) -> None:
        if self._closed:
            raise ProducerClosed("send() on a closed producer")
        if self._fatal is not None:
            raise self._fatal
        self._check_started()
        if self._queued_bytes > self.max_buffer_bytes:
            raise BufferFull(f"{self._queued_bytes} bytes of sealed batches wait to be sent "
                             f"(max_buffer_bytes {self.max_buffer_bytes}): await producer.ready()")

    def _new_batch(self) -> _Batch:
        self._admit()
        batch = _Batch(self, self._loop.create_future())
        self._open = batch
        if self.linger_s <= 0:
            self._linger = self._loop.call_soon(self._linger_expired, batch)
        else:
            self._linger = self._loop.call_later(self.linger_s, self._linger_expired, batch)
        return batch

    def _typed(self, batch: _Batch, value, rtype: int):
        if type(value) is tuple:
            rec = value
            body = value[-1]
        else:
            rec = (rtype, value)
            body = value
        n = len(body)
        if n > MAX_VALUE_LEN:
            raise ValueError(f"value: expected at most {MAX_VALUE_LEN} bytes, found {n}")
        batch.mixed = True
        return rec, n + (2 if len(rec) == 3 else 0)

    def _big_record(self, batch: _Batch, n: int) -> _Batch:
        if n > MAX_VALUE_LEN:
            raise ValueError(f"value: expected at most {MAX_VALUE_LEN} bytes, found {n}")
        if batch.records:
            self._seal(batch)
            batch = self._new_batch()
        return batch

    def _linger_expired(self, batch: _Batch) -> None:
        if self._open is batch and batch.records:
            self._seal(batch)

    def _seal(self, batch: _Batch) -> None:
        self._open = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        records = batch.records
        batch.records = None
        if batch.mixed:
            batch.payload, batch.record_count = encode(records)
        else:
            batch.payload, batch.record_count = encode_uniform(records)
        self._enqueue(batch)

    def _enqueue(self, batch: _Batch) -> None:
        batch.sequence = self._next_id
        self._next_id += 1
        batch.sealed_at = time.monotonic()
        self._queue.append(batch)
        self._queued_bytes += len(batch.payload)
        self._idle.clear()
        self._pump()

    def _pump(self) -> None:
        """Send queued batches while the window has room."""
        link = self._link
        if link is None or not link.alive or self._reconnecting is not None:
            return
        queue = self._queue
        room = self.window - len(self._inflight)
        if room <= 0 or not queue:
            return
        frames = []
        now = time.perf_counter()
        topic_id = self.topic_id
        while room > 0 and queue:
            batch = queue.popleft()
            self._queued_bytes -= len(batch.payload)
            batch.sent_at = now
            frames.append(Ingest(topic_id, batch.sequence, batch.record_count, batch.payload,
                                 batch.timestamp_ns))
            self._inflight.append(batch)
            room -= 1
        self.stats.batches_sent += len(frames)
        try:
            link.send_many(frames)
        except ConnectionLost:
            pass  # on_lost has run or will run and requeues them
        if self._queued_bytes <= self.max_buffer_bytes:
            self._room.set()
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(1.0, self._check_stalled)

    # ------------------------------------------------------------ link events (DataListener)

    def on_ack(self, batch_id: int) -> None:
        inflight = self._inflight
        now = time.perf_counter()
        stats = self.stats
        latencies = stats.latencies_s
        while inflight and inflight[0].sequence <= batch_id:
            batch = inflight.popleft()
            if batch.future.done():
                continue
            batch.latency_s = now - batch.sent_at
            if latencies is not None:
                latencies.append(batch.latency_s)
            stats.batches_acked += 1
            stats.records_acked += batch.record_count
            stats.bytes_acked += len(batch.payload)
            batch.future.set_result(None)
        if self.window < self.max_in_flight:
            self.window += 1
        if self._queue:
            self._pump()
        elif not inflight:
            self._idle.set()

    def on_backpressure(self) -> None:
        stats = self.stats
        stats.backpressure += 1
        self.window = max(1, self.window // 2)
        if not stats.smallest_window or self.window < stats.smallest_window:
            stats.smallest_window = self.window

    def on_refused(self, reply: ErrorResponse) -> None:
        error = broker_error(reply, self._link.endpoint if self._link else self.endpoint)
        batch = self._find_inflight(reply.batch_id)
        if error.code in _RESEND_CODES:
            if isinstance(error, NotLeader) and error.address:
                self.endpoint = error.address
                self._redirected = True
            # Everything from this batch on is sent again on a fresh connection.
            link = self._link
            if link is not None:
                link.abort(ConnectionLost(link.endpoint, error.message))
            return
        if batch is None:
            if reply.batch_id:
                return  # a batch that is no longer in flight: already settled
            # A refusal of nothing in flight: the connection is not usable (say, auth).
            self._fatal = error
            self._fail_all(error)
            if self._link is not None:
                self._link.abort(ConnectionLost(self._link.endpoint, error.message))
            return
        self._inflight.remove(batch)
        self._fail(batch, error)
        # The batches behind it will be refused as out of order: renumbered after reconnecting.
        if not self._inflight and not self._queue:
            self._idle.set()

    def _find_inflight(self, batch_id: int) -> _Batch | None:
        if not self._inflight:
            return None
        if batch_id == 0:
            return self._inflight[0]
        for batch in self._inflight:
            if batch.sequence == batch_id:
                return batch
        return None

    def on_lost(self, link: Link, error: BaseException) -> None:
        if link is not self._link:
            return
        self._link = None
        if self._closed or self._fatal is not None:
            return
        if not self._redirected:
            # The node itself may be gone: find the leader again from the seeds.
            self.endpoint = self.seeds
        self._redirected = False
        # Unacknowledged batches go back to the front of the queue, oldest first.
        inflight = self._inflight
        while inflight:
            batch = inflight.pop()
            if batch.future.done():
                continue
            self._queue.appendleft(batch)
            self._queued_bytes += len(batch.payload)
            self.stats.resent += 1
        if self._reconnecting is None:
            self._reconnecting = self._loop.create_task(self._reconnect(error))

    async def _reconnect(self, error: BaseException) -> None:
        attempt = 0
        try:
            while not self._closed:
                await asyncio.sleep(self.options.backoff.delay(attempt))
                self._expire(time.monotonic(), error)
                if self._closed:
                    return
                try:
                    await self._connect()
                except (ConnectionLost, BrokerError, OSError) as exc:
                    if isinstance(exc, BrokerError) and not exc.retryable:
                        self._fatal = exc
                        self._fail_all(exc)
                        return
                    if isinstance(exc, ConnectionLost):
                        self.endpoint = self.seeds
                    error = exc
                    attempt += 1
                    continue
                self.stats.reconnects += 1
                self.window = self.max_in_flight
                break
        finally:
            self._reconnecting = None
        self._pump()

    def _expire(self, now: float, cause: BaseException) -> None:
        deadline = now - self.delivery_timeout_s
        queue = self._queue
        while queue and queue[0].sealed_at < deadline:
            batch = queue.popleft()
            self._queued_bytes -= len(batch.payload)
            self._fail(batch, DeliveryTimeout(
                f"batch {batch.sequence} of topic {self.topic_id} not acknowledged within "
                f"{self.delivery_timeout_s} s (last error: {cause})"))
        if not queue and not self._inflight:
            self._idle.set()
        self._room.set()

    def _check_stalled(self) -> None:
        """A broker that holds acks longer than the request timeout is treated as gone."""
        self._watchdog = None
        if self._closed:
            return
        if self._inflight:
            oldest = self._inflight[0].sent_at
            if time.perf_counter() - oldest > self.options.request_timeout_s and self._link:
                self._link.abort(ConnectionLost(
                    self._link.endpoint, f"no ack for {self.options.request_timeout_s} s"))
        if self._inflight or self._queue:
            self._watchdog = self._loop.call_later(1.0, self._check_stalled)

    def _fail_all(self, error: BaseException) -> None:
        batches = list(self._inflight) + list(self._queue)
        if self._open is not None:
            batches.append(self._open)
            self._open = None
        self._inflight.clear()
        self._queue.clear()
        self._queued_bytes = 0
        for batch in batches:
            self._fail(batch, error)
        if self._idle is not None:
            self._idle.set()
        if self._room is not None:
            self._room.set()

    def _fail(self, batch: _Batch, error: BaseException) -> None:
        future = batch.future
        if future.done():
            return
        self.stats.failed += 1
        self.last_error = error
        future.set_exception(error)
        # Fire-and-forget sends never await their batch; asyncio must not report it as lost.
        future.exception()

    # ------------------------------------------------------------ locating

    async def _locate(self, batch: _Batch) -> None:
        if batch.offset is not None or self.locator is None or not self.idempotent:
            return
        await self.locator.locate(batch)

    async def _locate_record(self, batch: _Batch, index: int) -> Delivered:
        await self._locate(batch)
        if batch.offset is None:
            return Delivered(None, None, batch.sequence, index)
        offsets = batch.record_offsets
        if offsets is None:
            offsets = batch.record_offsets = self.locator.record_offsets(batch)
        return Delivered(int(offsets[index]), SortKey(batch.first_ts, batch.first_key + index),
                         batch.sequence, index)
