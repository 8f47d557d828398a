"""The consuming side of a connection: Fetch, ListOffsets, Subscribe, Unsubscribe, CommitOffset.

Owns the fetch rules of LWP.md ("Fetch semantics"); bytes come from Topic.read_raw on a reader
thread (the topic's lock may be held by a group write), committed offsets from `offsets`.
"""
from __future__ import annotations

from lance_net.protocol import (
    FETCH_TAIL, OFFSET_OUT_OF_RANGE, Ack, CatchingUp, CommitAck, CommitOffset, Dialect, Fetch,
    FetchResponse, ListOffsets, OffsetsResponse, Subscribe, SubscribeAck, Unsubscribe,
    UnsubscribeAck,
)
from lance_store import OffsetError

from .auth import READ
from .refusal import Refused

# Subscribe with this start resumes from the consumer's committed offset (else the low watermark).
RESUME = FETCH_TAIL
_FETCH_PREFIX = 16  # next_offset u64, bytes u32, record_count u32


def _out_of_range(topic) -> Refused:
    return Refused.of(OFFSET_OUT_OF_RANGE,
                      f"low={topic.low_watermark} high={topic.high_watermark}")


def fetch(conn, command: Fetch):
    broker = conn.broker
    topic = broker.topic(command.topic_id)
    conn.require(topic, READ)
    start = command.start
    high = broker.readable_end(topic)   # L3: the committed offset
    if start == FETCH_TAIL:
        return FetchResponse(high, 0, b"")
    if start > high:
        broker.metrics.fetch_errors.labels("CATCHING_UP").inc()
        return CatchingUp(high)
    if start < topic.low_watermark:
        broker.metrics.fetch_errors.labels(OFFSET_OUT_OF_RANGE).inc()
        raise _out_of_range(topic)
    max_bytes = max(1, min(command.max_bytes, broker.options.max_payload_size - _FETCH_PREFIX))
    if start == high:
        if not command.max_wait_ms or broker.watermarks.closing:
            broker.metrics.fetch_requests.labels(topic.name).inc()
            return FetchResponse(start, 0, b"")
        return _wait_and_read(conn, topic, start, max_bytes, command.max_wait_ms / 1000)
    return _read(conn, topic, start, min(max_bytes, high - start))


async def _wait_and_read(conn, topic, start: int, max_bytes: int, wait_s: float):
    broker = conn.broker
    await broker.watermarks.wait(topic.id, wait_s)
    topic = broker.topic(topic.id)  # UNKNOWN_TOPIC if it was deleted meanwhile
    high = broker.readable_end(topic)
    if high <= start:
        broker.metrics.fetch_requests.labels(topic.name).inc()
        return FetchResponse(start, 0, b"")
    return await _read(conn, topic, start, min(max_bytes, high - start))


async def _read(conn, topic, start: int, max_bytes: int) -> FetchResponse:
    metrics = conn.broker.metrics
    try:
        data, next_offset, records = await conn.broker.run_read(topic.read_raw, start, max_bytes)
    except OffsetError as exc:
        metrics.fetch_errors.labels(exc.code).inc()
        raise Refused(str(exc)) from None
    metrics.fetch_requests.labels(topic.name).inc()
    metrics.fetch_records.labels(topic.name).inc(records)
    metrics.fetch_bytes.labels(topic.name).inc(len(data))
    return FetchResponse(next_offset, records, data)


def list_offsets(conn, command: ListOffsets):
    topic = conn.broker.topic(command.topic_id)
    conn.require(topic, READ)
    high = conn.broker.readable_end(topic)
    if command.timestamp_ns == ListOffsets.EARLIEST:
        return OffsetsResponse(topic.low_watermark, topic.low_watermark, high)
    if command.timestamp_ns == ListOffsets.LATEST:
        return OffsetsResponse(high, topic.low_watermark, high)
    return _offset_for_time(conn, topic, command.timestamp_ns)


async def _offset_for_time(conn, topic, timestamp_ns: int) -> OffsetsResponse:
    offset = await conn.broker.run_read(topic.offset_for_time, timestamp_ns)
    return OffsetsResponse(offset, topic.low_watermark, topic.high_watermark)


def subscribe(conn, command: Subscribe) -> SubscribeAck:
    broker = conn.broker
    topic = broker.topic(command.topic_id)
    conn.require(topic, READ)
    start = command.start
    if start == RESUME:
        committed = broker.offsets.committed(topic.id, command.consumer_id)
        start = topic.low_watermark if committed is None else committed
    conn.subscriptions[(topic.id, command.consumer_id)] = command.max_batch_bytes
    return SubscribeAck(command.consumer_id, start)


def unsubscribe(conn, command: Unsubscribe):
    topic = conn.broker.topic(command.topic_id)
    conn.require(topic, READ)
    conn.subscriptions.pop((topic.id, command.consumer_id), None)
    if conn.lwp.dialect is Dialect.IEEE:
        return Ack(command.consumer_id)  # what upstream clients wait for
    return UnsubscribeAck(command.consumer_id)


def commit_offset(conn, command: CommitOffset):
    broker = conn.broker
    topic = broker.topic(command.topic_id)
    conn.require(topic, READ)
    if command.offset > topic.high_watermark:
        raise _out_of_range(topic)
    return _commit(conn, topic, command.consumer_id, command.offset)


async def _commit(conn, topic, consumer_id: int, offset: int) -> CommitAck:
    await conn.broker.offsets.commit(topic.id, topic.name, consumer_id, offset)
    return CommitAck(consumer_id, offset)


# command type -> (handler, barrier)
HANDLERS = {
    Fetch: (fetch, False),
    ListOffsets: (list_offsets, False),
    Subscribe: (subscribe, False),
    Unsubscribe: (unsubscribe, False),
    CommitOffset: (commit_offset, False),
}
