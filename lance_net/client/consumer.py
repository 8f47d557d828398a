"""The consumer: seek, fetch ahead, decode whole batches into records, commit where to resume.

Owns the read position of one topic, the one fetch kept in flight ahead of the caller, and
resetting after retention removed the position; decoding is `fetched`'s, offsets `offsets`'.

Positions are topic byte offsets of batch starts. `position` is where the records not yet
returned begin; committing it means "resume here", so records of a batch that was only partly
returned are read again after a restart (at-least-once).
"""
from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any, AsyncIterator

from lance_store.records import Record

from lance_net.protocol import (
    FETCH_TAIL, INVALID_CLIENT_COMMAND, CatchingUp, Fetch, FetchResponse, ListOffsets,
)

from .admin import Admin, TopicRef
from .errors import BrokerError, ClientError, ConnectionLost, OffsetOutOfRange, UnexpectedReply
from .fetched import DEFAULT_FETCH_BYTES, RecordBatch, decode, empty
from .offsets import OffsetStore, consumer_id_for
from .options import DEFAULT_ENDPOINT, ClientOptions, split_options
from .session import Session

EARLIEST = "earliest"
LATEST = "latest"

StartFrom = str | int | datetime.datetime
"""EARLIEST, LATEST, an offset (int), or a time (datetime, or `("time", ns)` via seek_to_time)."""


class Consumer:
    """Reads one topic from a position (asyncio).

        async with Consumer("127.0.0.1:1992", "events", start_from="earliest") as consumer:
            batch = await consumer.poll_batch()        # numpy columns, for bulk work
            for record in await consumer.poll():       # lance_store Records
                ...
            await consumer.commit()

    start_from applies when the offset store holds no committed offset for this consumer.
    reset ("earliest", "latest" or "error") says what to do when retention removed the
    position. Every option of ClientOptions (dialect, ssl, token, ...) may be a keyword.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, topic: TopicRef = "", *,
                 start_from: StartFrom = EARLIEST, offset_store: OffsetStore | None = None,
                 consumer_name: str = "lance", consumer_id: int | None = None,
                 max_bytes: int = DEFAULT_FETCH_BYTES, max_wait_ms: int = 500,
                 reset: str = EARLIEST, prefetch: bool = True,
                 options: ClientOptions | None = None, **option_overrides: Any):
        self.options = split_options(options, option_overrides)
        if option_overrides:
            raise TypeError(f"Consumer: unexpected arguments {sorted(option_overrides)}")
        if topic == "" or topic is None:
            raise ValueError("topic: expected a topic name or id, found none")
        if reset not in (EARLIEST, LATEST, "error"):
            raise ValueError(f"reset: expected 'earliest', 'latest' or 'error', found {reset!r}")
        self.endpoint = endpoint
        self.topic = topic
        self.start_from = start_from
        self.offset_store = offset_store
        self.consumer_name = consumer_name
        self.consumer_id = consumer_id if consumer_id is not None else consumer_id_for(consumer_name)
        self.max_bytes = max_bytes
        self.max_wait_ms = max_wait_ms
        self.reset = reset
        self.prefetch = prefetch
        self.topic_id = 0
        self.topic_info: dict | None = None
        self.session: Session | None = None
        self.committed: int | None = None
        self.resets = 0
        self._fetch_at = 0                  # where the next fetch starts
        self._buffer: RecordBatch | None = None  # fetched, not yet returned
        self._ahead: tuple[int, asyncio.Future] | None = None
        self._started = False

    # ------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> Consumer:
        """Connect, find the topic, and take the committed offset (else `start_from`)."""
        if self._started:
            return self
        admin = Admin(self.endpoint, self.options)
        try:
            self.topic_info = await admin.get_topic(self.topic)
        finally:
            await admin.close()
        self.topic_id = int(self.topic_info["id"])
        self.session = Session(admin.session.endpoint, self.options, seeds=self.endpoint)
        self._started = True
        stored = None
        if self.offset_store is not None:
            stored = await self.offset_store.load(self.topic_id, self.consumer_id)
        if stored is not None:
            self.committed = stored
            self._move(stored)
        else:
            await self._seek_to(self.start_from)
        return self

    async def close(self) -> None:
        """Close the connection once fetches still parked on the broker are answered."""
        self._drop_ahead()
        if self.session is not None:
            await self.session.close(linger_s=self.max_wait_ms / 1000 + 1.0)
        if self.offset_store is not None:
            await self.offset_store.close()

    # ------------------------------------------------------------ seeking

    @property
    def position(self) -> int:
        """The offset consuming resumes from: the batch holding the next record to return."""
        if self._buffer is not None and len(self._buffer):
            return self._buffer.resume_offset(0)
        return self._fetch_at

    async def seek(self, offset: int) -> None:
        """Continue from `offset`, which must be a batch start (the broker checks)."""
        self._check_started()
        self._move(offset)

    async def seek_to_earliest(self) -> int:
        return await self._seek_to(EARLIEST)

    async def seek_to_latest(self) -> int:
        return await self._seek_to(LATEST)

    async def seek_to_time(self, when: int | datetime.datetime) -> int:
        """Continue from the first batch whose last record is at or after `when` (ns or datetime)."""
        return await self._seek_to(when if isinstance(when, datetime.datetime) else ("time", when))

    async def offsets(self) -> tuple[int, int]:
        """(low watermark, high watermark) of the topic now."""
        self._check_started()
        reply = await self.session.request(ListOffsets(self.topic_id, ListOffsets.EARLIEST))
        return reply.low, reply.high

    async def _seek_to(self, where) -> int:
        self._check_started()
        if where == EARLIEST:
            timestamp = ListOffsets.EARLIEST
        elif where == LATEST:
            timestamp = ListOffsets.LATEST
        elif isinstance(where, datetime.datetime):
            timestamp = to_ns(where)
        elif isinstance(where, tuple) and where[0] == "time":
            timestamp = int(where[1])
            if timestamp in (ListOffsets.EARLIEST, ListOffsets.LATEST):
                timestamp = max(1, min(timestamp, ListOffsets.LATEST - 1))
        elif isinstance(where, int):
            self._move(where)
            return where
        else:
            raise ValueError(f"start_from: expected 'earliest', 'latest', an offset or a time, "
                             f"found {where!r}")
        try:
            reply = await self.session.request(ListOffsets(self.topic_id, timestamp))
            offset = reply.offset
        except BrokerError as exc:
            if exc.message != INVALID_CLIENT_COMMAND:
                raise
            offset = await self._seek_upstream(timestamp)
        self._move(offset)
        return offset

    async def _seek_upstream(self, timestamp: int) -> int:
        """The ends of a topic on an upstream server, which has no ListOffsets."""
        if timestamp == ListOffsets.EARLIEST:
            return 0
        if timestamp == ListOffsets.LATEST:
            reply = await self.session.request(Fetch(self.topic_id, FETCH_TAIL, 1))
            return reply.next_offset
        raise ClientError(f"seeking topic {self.topic_id} by time needs ListOffsets, "
                          f"which the server at {self.session.endpoint} does not offer")

    def _move(self, offset: int) -> None:
        self._drop_ahead()
        self._buffer = None
        self._fetch_at = offset

    def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            # The link matches the late reply to the cancelled request and drops it.
            ahead[1].cancel()
            ahead[1].add_done_callback(_ignore)

    def _check_started(self) -> None:
        if not self._started:
            raise ClientError("the consumer is not started: use `await consumer.start()` "
                              "or `async with Consumer(...)`")

    # ------------------------------------------------------------ polling

    async def poll_batch(self, timeout: float | None = None, *,
                         max_records: int | None = None) -> RecordBatch:
        """The next records as numpy columns over the fetched bytes (empty when none came).

        Waits for data up to `timeout` seconds (default: one long-poll of max_wait_ms).
        """
        self._check_started()
        buffered = self._buffer
        if buffered is None or not len(buffered):
            buffered = await self._next_fetch(timeout)
        if max_records is not None and max_records < len(buffered):
            self._buffer = buffered.slice(max_records, len(buffered))
            return buffered.slice(0, max_records)
        self._buffer = None
        return buffered

    async def poll(self, max_records: int | None = None, timeout: float | None = None) -> list[Record]:
        """The next records as lance_store Records (offset, SortKey, type, value bytes)."""
        return (await self.poll_batch(timeout, max_records=max_records)).records()

    async def __aiter__(self) -> AsyncIterator[Record]:
        while True:
            for record in await self.poll():
                yield record

    async def _next_fetch(self, timeout: float | None) -> RecordBatch:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = await self._fetch_once(deadline)
            if len(batch) or deadline is None or time.monotonic() >= deadline:
                return batch

    async def _fetch_once(self, deadline: float | None) -> RecordBatch:
        start = self._fetch_at
        ahead, self._ahead = self._ahead, None
        wait_ms = self.max_wait_ms
        if deadline is not None:
            wait_ms = max(0, min(wait_ms, int((deadline - time.monotonic()) * 1000)))
        try:
            if ahead is not None and ahead[0] == start:
                reply = await ahead[1]
            else:
                if ahead is not None:
                    ahead[1].cancel()
                    ahead[1].add_done_callback(_ignore)
                reply = await self._request_fetch(start, wait_ms)
        except OffsetOutOfRange as exc:
            await self._reset(exc)
            return empty(self._fetch_at)
        except ConnectionLost:
            # The prefetched request died with its link; ask again on a fresh one.
            reply = await self._request_fetch(start, wait_ms)
        if type(reply) is CatchingUp:
            # The position is past this node's end (a lagging follower, or a topic cut back).
            await asyncio.sleep(min(0.1, wait_ms / 1000))
            return empty(start)
        if type(reply) is not FetchResponse:
            raise UnexpectedReply("Fetch", "FetchResponse", reply)
        batch = decode(reply.data, start, reply.next_offset)
        if not len(batch) and len(reply.data):
            # An upstream server cut the only record short: ask for more next time.
            self.max_bytes *= 2
        self._fetch_at = batch.next_offset
        if self.prefetch and len(batch):
            self._ahead = (self._fetch_at, self._send_fetch(self._fetch_at, self.max_wait_ms))
        return batch

    def _send_fetch(self, start: int, wait_ms: int) -> asyncio.Future:
        async def fetch():
            return await self._request_fetch(start, wait_ms)
        return asyncio.ensure_future(fetch())

    async def _request_fetch(self, start: int, wait_ms: int):
        timeout = self.options.request_timeout_s + wait_ms / 1000
        return await self.session.request(Fetch(self.topic_id, start, self.max_bytes, wait_ms),
                                          timeout=timeout)

    async def _reset(self, exc: OffsetOutOfRange) -> None:
        if self.reset == "error":
            raise exc
        self.resets += 1
        if self.reset == EARLIEST and exc.low is not None:
            self._move(exc.low)
        else:
            await self._seek_to(self.reset)

    # ------------------------------------------------------------ committing

    async def commit(self, offset: int | None = None) -> int:
        """Store `offset` (default: position) in the offset store as where to resume."""
        self._check_started()
        if self.offset_store is None:
            raise ClientError("commit: this consumer has no offset_store")
        offset = self.position if offset is None else offset
        await self.offset_store.save(self.topic_id, self.consumer_id, offset)
        self.committed = offset
        return offset


def _ignore(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def to_ns(when: datetime.datetime) -> int:
    """A datetime as ns since the epoch (a naive one is taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    delta = when - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
