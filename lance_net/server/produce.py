"""The producing side of a connection: Ingest admission and InitProducer.

Owns what a batch must be before it is queued (rights, topic, producer sequence, TLV, size);
the queue and the write belong to `ingest`, sequence state to `producers`.

No Python work per record: the payload is checked by the protocol's scanner
(C) and stored as it came.
"""
from __future__ import annotations

import logging

from lance_net.protocol import (
    INVALID_BATCH, OUT_OF_ORDER_SEQUENCE, Ack, CompressionError, Dialect, ErrorResponse,
    InitProducer, InvalidBatch, ProducerResponse, decompress_block, parse_error_message,
)
from lance_net.protocol.ingest import validate_ingest
from lance_store import BatchSpec
from lance_store.records import MAX_VALUE_LEN, encode
from lance_store.segment.header import BATCH_OVERHEAD

from .auth import WRITE
from .ingest import Ticket
from .producers import DUPLICATE, GAP
from .refusal import Refused

log = logging.getLogger("lance_net.server.produce")

# A stored batch is fetched as FetchResponse(next u64, bytes u32, count u32) + the batch,
# which must fit in one frame too.
_FETCH_PREFIX = 16


def ingest(conn, event, received: float) -> None:
    """Queue one Ingest frame's batch, or refuse it in the ack stream."""
    broker = conn.broker
    batch_id = event.batch_id
    producer_id = 0
    sequence = None
    try:
        if conn.grant is None:
            raise Refused.of("AUTH_REQUIRED", "send Authenticate before Ingest")
        topic = broker.topic(event.topic_id)
        conn.require(topic, WRITE)
        producer_id = conn.producer_ids.get(topic.id, 0)
        if producer_id:
            sequence = broker.producers.get(topic.id, producer_id)
            if sequence is None:  # InitProducer adds it before binding: never expected
                raise Refused.of(OUT_OF_ORDER_SEQUENCE,
                                 f"producer {producer_id} has no sequence on topic {topic.id}: "
                                 f"send InitProducer again")
            verdict, original = sequence.admit(batch_id)
            if verdict is DUPLICATE:
                _duplicate(conn, batch_id, original, received)
                return
            if verdict is GAP:
                raise Refused.of(OUT_OF_ORDER_SEQUENCE,
                                 f"producer {producer_id} on topic {topic.id}: expected sequence "
                                 f"{sequence.expected}, found {batch_id}")
        payload, count = _records(conn, event)
    except Refused as refusal:
        code = parse_error_message(refusal.message)[0] or "other"
        broker.metrics.ingest_refused.labels(code).inc()
        conn.acks.send(conn.encode(ErrorResponse(refusal.message, batch_id)))
        return
    ticket = Ticket(received)
    slot = conn.acks.reserve()
    ticket.add_done_callback(lambda t: conn.settle_ack(slot, batch_id, received, t))
    if sequence is not None:
        sequence.accept(batch_id, ticket)
    committer = broker.committer(topic)
    committer.submit(BatchSpec(payload, count, event.timestamp_ns or None, producer_id,
                               batch_id if producer_id else 0), ticket)
    broker.metrics.batch_size_bytes.observe(len(payload))
    if committer.over_high_mark:
        conn.backpressure(committer)


def _duplicate(conn, batch_id: int, original: Ticket | None, received: float) -> None:
    """A batch already accepted: acked when the original is durable, never written twice."""
    conn.broker.metrics.ingest_duplicates.inc()
    if original is None:
        conn.acks.send(conn.encode(Ack(batch_id)))
        return
    slot = conn.acks.reserve()
    original.add_done_callback(lambda t: conn.settle_ack(slot, batch_id, received, t))


def _records(conn, event) -> tuple[bytes, int]:
    """The TLV payload to store and its record count; Refused(INVALID_BATCH) when unusable."""
    limit = conn.broker.options.max_payload_size
    payload = event.payload
    if event.compressed:
        try:
            payload = decompress_block(payload, limit)
        except CompressionError as exc:
            raise Refused.of(INVALID_BATCH, str(exc)) from None
    if not payload:
        raise Refused.of(INVALID_BATCH, f"empty payload with record_count {event.record_count}")
    try:
        count = validate_ingest(payload, event.record_count)
    except InvalidBatch as exc:
        # Upstream clients send opaque bytes (LWP.md section 2): kept whole, as one raw record.
        if conn.lwp.dialect is not Dialect.IEEE or len(payload) > MAX_VALUE_LEN:
            raise Refused.of(INVALID_BATCH, str(exc)) from None
        payload, count = encode([payload])
    if count == 0:
        raise Refused.of(INVALID_BATCH, "record_count 0: a batch needs at least one record")
    largest = limit - _FETCH_PREFIX - BATCH_OVERHEAD
    if len(payload) > largest:
        raise Refused.of(INVALID_BATCH, f"payload of {len(payload)} bytes: expected at most "
                                        f"{largest}, so that the stored batch fits in a fetch")
    return payload, count


def unsupported(conn, event) -> None:
    """An encrypted Ingest (or a frame of no kind with a batch id) is refused in ack order."""
    conn.acks.send(conn.encode(ErrorResponse.of(INVALID_BATCH, event.reason, event.batch_id)))


def init_producer(conn, command: InitProducer):
    topic = conn.broker.topic(command.topic_id)
    conn.require(topic, WRITE)
    return _bind(conn, topic, command.producer_id)


async def _bind(conn, topic, producer_id: int) -> ProducerResponse:
    """Bind the producer (a new one for id 0) to this connection for the topic."""
    broker = conn.broker
    if not producer_id:
        producer_id = await broker.new_producer_id()
        log.info("%s: new producer %d on topic %s", conn.peer, producer_id, topic.name)
    sequence = broker.producers.get(topic.id, producer_id)
    if sequence is None:
        # May scan the previous segment's batch headers: not on the event loop.
        last = await broker.run_read(topic.producer_last_seq, producer_id)
        sequence = broker.producers.add(topic.id, producer_id, last)
    conn.producer_ids[topic.id] = producer_id
    return ProducerResponse(producer_id, sequence.last or 0)


# command type -> (handler, barrier): a barrier holds later frames until it is answered,
# so Ingest frames after InitProducer already carry sequences.
HANDLERS = {InitProducer: (init_producer, True)}
