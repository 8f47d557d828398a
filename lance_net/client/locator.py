"""Where acknowledged batches landed: read batch headers back and match (producer_id, sequence).

An LWP ack names only the batch id, so an idempotent producer finds its batches' offsets and
SortKeys in the headers the broker wrote. Owns that search; it runs only when a caller awaits an
offset, and reads forward from the high watermark seen when the producer started.
"""
from __future__ import annotations

import asyncio

import numpy as np

from lance_store.scanner import scan_payload
from lance_store.segment.header import BATCH_OVERHEAD

from lance_net.protocol import CatchingUp, Fetch, FetchResponse

from .errors import OffsetOutOfRange
from .fetched import DEFAULT_FETCH_BYTES, is_batched, scan_fetched_batches
from .options import ClientOptions
from .session import Session

# Batches seen but not yet asked for are remembered up to this many (oldest dropped first).
MAX_REMEMBERED = 100_000


class OffsetLocator:
    def __init__(self, endpoint: str, options: ClientOptions, topic_id: int, producer_id: int,
                 start: int, *, seeds: str | None = None):
        self.session = Session(endpoint, options, seeds=seeds)
        self.topic_id = topic_id
        self.producer_id = producer_id
        self.cursor = start
        self._seen: dict[int, tuple[int, int, int]] = {}  # sequence -> (offset, first_ts, first_key)
        self._lock = asyncio.Lock()

    async def locate(self, batch) -> None:
        """Fill batch.offset, first_ts and first_key; batch must be acknowledged already."""
        async with self._lock:
            if batch.offset is not None:
                return
            seen = self._seen
            while batch.sequence not in seen:
                if not await self._read_more():
                    return  # the broker's log holds no such batch: offset stays unknown
            batch.offset, batch.first_ts, batch.first_key = seen.pop(batch.sequence)

    async def _read_more(self) -> bool:
        """Read the next run of batches; False when the end of the log is reached."""
        try:
            reply = await self.session.request(
                Fetch(self.topic_id, self.cursor, DEFAULT_FETCH_BYTES))
        except OffsetOutOfRange as exc:
            if exc.low is None or exc.low <= self.cursor:
                raise
            self.cursor = exc.low  # retention removed what lay between
            return True
        if type(reply) is CatchingUp or type(reply) is not FetchResponse or not len(reply.data):
            return False
        data = reply.data
        if not is_batched(data):
            return False  # an upstream log has no batch headers to match
        batches = scan_fetched_batches(data, self.cursor)
        mine = batches.producer_id == np.uint64(self.producer_id)
        seen = self._seen
        for seq, offset, ts, key in zip(batches.producer_seq[mine].tolist(),
                                        batches.base_offset[mine].tolist(),
                                        batches.first_ts[mine].tolist(),
                                        batches.first_key[mine].tolist()):
            seen[seq] = (offset, ts, key)
        while len(seen) > MAX_REMEMBERED:
            del seen[next(iter(seen))]
        self.cursor = reply.next_offset
        return True

    @staticmethod
    def record_offsets(batch) -> np.ndarray:
        """The topic offset of each record of a located batch."""
        return scan_payload(batch.payload, first_offset=batch.offset + BATCH_OVERHEAD).offset

    async def close(self) -> None:
        await self.session.close()
