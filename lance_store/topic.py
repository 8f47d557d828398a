"""A topic: its segments, appends with group commit, rotation, reads, retention.

It owns one folder `segments/<name>/`; the data directory as a whole (node.json,
the lock, topic ids) belongs to `lance_store.store`.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

import crc32c
import numpy as np

from . import fsutil, scanner
from . import index as sparse_index
from .errors import CorruptionError, OffsetError, ReadOnlyError, WriteFailedError
from .groupfill import fill_group
from .pipeline import AsyncAppender, _Flight
from .records import (HEADER_LEN, RAW, Record, encode, encode_into, encode_uniform, encoded_size,
                      put_padding)
from .recovery import SegmentFile, TopicState, cut_tail, older_producers, recover_topic
from .segment import naming
from .segment.header import BATCH_OVERHEAD, BatchHeader, encode_batch
from .segment.reader import (BatchView, locate, map_readonly, read_batches, read_unit,
                             scan_records_windowed,
                             scan_segment, split_batches)
from .segment.writer import SegmentWriter, give_back
from .sortkey import HybridClock, SortKey

log = logging.getLogger("lance_store.topic")

METADATA = "metadata.json"
HIGH = 2**64 - 1
# Groups smaller than this end on a block boundary when another group is expected
# while they are in flight, so that both are in flight at once (Topic._build_group).
OVERLAP_BELOW = 1 << 20
# How far past a fetch the kernel is asked to read a segment (see Topic._read_ahead).
READ_AHEAD = 16 * 1024 * 1024


class AppendResult(NamedTuple):
    """Where an appended batch landed (a NamedTuple: one per batch on the hot path)."""

    offset: int
    next_offset: int
    record_count: int
    timestamp_ns: int = 0
    first_key_low: int = 0


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """A batch already encoded as TLV records (the broker's ingest path)."""

    payload: bytes
    record_count: int
    timestamp_ns: int | None = None
    producer_id: int = 0
    producer_seq: int = 0


@dataclass
class Retention:
    max_age_secs: int = 0
    max_bytes: int = 0

    def as_dict(self) -> dict:
        return {"max_age_secs": int(self.max_age_secs), "max_bytes": int(self.max_bytes)}


@dataclass
class ScanChunk:
    """One segment's records as arrays, with zero-copy access to the values.

    `buffer` is a read-only map of the segment; it is closed when the next
    chunk is produced, so copy what must outlive the iteration step.
    """

    segment: str
    offsets: np.ndarray      # topic byte offset of each record
    lengths: np.ndarray      # value length
    types: np.ndarray
    timestamps: np.ndarray   # SortKey high word
    key_low: np.ndarray      # SortKey low word
    value_pos: np.ndarray    # where each value starts in `buffer`
    buffer: memoryview = field(repr=False)
    ext_types: np.ndarray | None = None   # ext_type of 0xFF records, 0 for the others

    def __len__(self) -> int:
        return len(self.offsets)

    def value(self, i: int) -> memoryview:
        p = int(self.value_pos[i])
        return self.buffer[p:p + int(self.lengths[i])]

    def values(self) -> list[memoryview]:
        return [self.buffer[p:p + n] for p, n in zip(self.value_pos.tolist(), self.lengths.tolist())]

    def fixed_width_values(self) -> np.ndarray:
        """Every value as one row of a 2-D uint8 array, for records of one fixed size.

        A zero-copy strided view when the values are evenly spaced (one batch);
        otherwise one vectorised gather (a copy). Raises ValueError when lengths differ.
        """
        if len(self) == 0:
            return np.empty((0, 0), dtype=np.uint8)
        width = int(self.lengths[0])
        if not np.all(self.lengths == width):
            raise ValueError("values differ in length; use value(i) or values()")
        base = np.frombuffer(self.buffer, dtype=np.uint8)
        steps = np.diff(self.value_pos)
        if len(steps) == 0 or np.all(steps == steps[0]):
            stride = int(steps[0]) if len(steps) else width
            return np.lib.stride_tricks.as_strided(
                base[int(self.value_pos[0]):], shape=(len(self), width), strides=(stride, 1),
                writeable=False)
        return base[self.value_pos.astype(np.intp)[:, None] + np.arange(width, dtype=np.intp)]


class Topic:
    """Use through `Store`; not constructed directly."""

    def __init__(self, store, folder: str, meta: dict, *, readonly: bool, clock: HybridClock):
        self.store = store
        self.folder = folder
        self.meta = meta
        self.name: str = meta["name"]
        self.id: int = int(meta.get("id", 0))
        self.readonly = readonly
        self.clock = clock
        self.config = store.config
        self.warnings: list[str] = []
        self._lock = threading.RLock()
        self._commit_lock = threading.Lock()
        self._async = None               # the AsyncAppender, made on first append_async
        self._dirty = False              # written but not yet synced (async and wal modes)
        self._listeners: list = []       # called when the high watermark advances
        self._commit_queue: list[_Request] = []
        self._committing = False
        self._failed: str | None = None
        self._writer: SegmentWriter | None = None
        self._read_fds: dict[str, _ReadFd] = {}
        self.producers: dict[int, tuple[int, int]] = {}  # producer_id -> (last seq, batch offset)
        state = recover_topic(folder, readonly=readonly, interval=self.config.index_interval_bytes,
                              warn=self._warn)
        self._adopt(state)
        if not readonly and not self.legacy:
            self._open_writer()

    # -- bookkeeping -----------------------------------------------------------------

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("%s", msg)

    def _adopt(self, state: TopicState) -> None:
        """Take the segments and producer sequences a recovery scan found."""
        self.segments: list[SegmentFile] = state.segments
        self.legacy = state.legacy
        self.producers = {pid: (seq, off) for pid, seq, off in state.producers}
        self._older_producers = False    # the previous segment's producers, loaded on demand
        if state.newest is not None:
            self.clock.observe(*state.newest)
        self._bases = [s.name.base for s in self.segments]
        self._high = self.segments[-1].end if self.segments else 0
        self._next = self._high          # end of everything written or in flight

    def _open_writer(self) -> None:
        active = self.segments[-1]
        self._writer = SegmentWriter(active.path, active.size, self.store.backend, self.store.pool)

    @property
    def active(self) -> SegmentFile:
        return self.segments[-1]

    @property
    def low_watermark(self) -> int:
        return self.segments[0].name.base if self.segments else 0

    @property
    def high_watermark(self) -> int:
        """End of the last complete, durable batch."""
        return self._high

    @property
    def retention(self) -> Retention:
        r = self.meta.get("retention") or {}
        return Retention(int(r.get("max_age_secs", 0) or 0), int(r.get("max_bytes", 0) or 0))

    def set_retention(self, max_age_secs: int = 0, max_bytes: int = 0) -> None:
        self._check_writable()
        self.meta["retention"] = Retention(max_age_secs, max_bytes).as_dict()
        fsutil.write_json(os.path.join(self.folder, METADATA), self.meta)

    def info(self) -> dict:
        return {
            "id": self.id, "name": self.name, "created_at": self.meta.get("created_at", 0),
            "topic_epoch": self.meta.get("topic_epoch", 1), "retention": self.retention.as_dict(),
        }

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnlyError(f"topic {self.name!r} is open read-only")
        if self.legacy:
            raise ReadOnlyError(f"topic {self.name!r} is an upstream (legacy) topic: read-only")
        if self._failed:
            raise ReadOnlyError(f"topic {self.name!r} went read-only: {self._failed}")

    # -- appends ---------------------------------------------------------------------

    def append(self, records: Sequence, *, timestamp_ns: int | None = None,
               record_type: int = RAW, producer_id: int = 0, producer_seq: int = 0) -> AppendResult:
        """Append one batch; returns once it is durable."""
        batch = _Values(records, record_type, timestamp_ns, producer_id, producer_seq)
        return self._combine(batch)

    def _combine(self, item) -> AppendResult:
        """Group commit across threads: callers queue their batch; whoever finds
        no write in progress becomes the leader and writes everything queued as
        one group with one sync, again and again while batches keep arriving,
        handing every caller its own result (or the group's error)."""
        _payload_size(item)                      # a bad batch fails alone, before queueing
        req = _Request(item)
        with self._commit_lock:
            self._commit_queue.append(req)
            lead = not self._committing
            self._committing = True
        if not lead:
            req.event.wait()
            return req.outcome()
        while True:
            with self._commit_lock:
                group, self._commit_queue = self._commit_queue, []
                if not group:
                    self._committing = False
                    return req.outcome()
            try:
                for r, res in zip(group, self._append([r.item for r in group], sync=True)):
                    r.result = res
            except BaseException as exc:
                for r in group:
                    r.error = exc
            for r in group:
                r.event.set()

    # -- asyncio appends ---------------------------------------------------------------

    def append_async(self, records: Sequence, *, timestamp_ns: int | None = None,
                     record_type: int = RAW, producer_id: int = 0,
                     producer_seq: int = 0) -> asyncio.Future:
        """Append one batch from an event loop: `await topic.append_async(records)`
        gives its AppendResult once it is durable.

        The batch is queued at the call (so calls keep their order); batches
        queued while earlier groups sync are written as the next group (up to
        two groups in flight); results arrive in log order. A plain function
        returning a future, because a coroutine frame per batch costs more than
        the rest of the queueing.
        """
        appender = self._async
        if (appender is not None and not self._failed and record_type <= 0xFC and records
                and not isinstance(records[0], tuple)):
            # The common case, kept lean: plain values of one type onto a
            # running pipeline (one exists only for a writable topic without WAL).
            try:
                size = encoded_size(records)
            except TypeError:
                pass
            else:
                return appender.enqueue(size, records, record_type, len(records), timestamp_ns,
                                        producer_id, producer_seq)
        return self._enqueue(_Values(records, record_type, timestamp_ns, producer_id, producer_seq))

    async def append_encoded_async(self, spec: BatchSpec) -> AppendResult:
        """`append_async` for a pre-encoded TLV payload."""
        return await self._enqueue(spec)

    def submit_encoded(self, spec: BatchSpec) -> asyncio.Future:
        """Queue a pre-encoded batch on the running loop's write pipeline at once
        (no coroutine step, so batches queue in call order); the future resolves
        to its AppendResult once durable. The broker's ingest path."""
        return self._enqueue(spec)

    def _enqueue(self, item):
        size = _payload_size(item)
        self._check_writable()
        if self.store.wal is not None:
            # WAL appends block; a worker thread keeps them off the event loop.
            return asyncio.get_running_loop().run_in_executor(None, self._combine, item)
        if self._async is None:
            self._async = AsyncAppender(self, self.store.completions,
                                        sync=self.config.durability != "async")
        if isinstance(item, BatchSpec):
            data, rtype, count = item.payload, -1, item.record_count
        elif item.encoded is not None:
            data, rtype, count = item.encoded, -1, len(item.values)
        else:
            data, rtype, count = item.values, item.record_type, len(item.values)
        return self._async.enqueue(size, data, rtype, count, item.timestamp_ns,
                                   item.producer_id, item.producer_seq)

    def append_queued(self, q, *, sync: bool) -> AppendResult:
        """A batch from the asyncio queue through the blocking path (the pump's
        way for a batch that seals the segment or outgrows a group buffer)."""
        if q.rtype < 0:
            item = BatchSpec(q.data, q.count, q.timestamp_ns, q.producer_id, q.producer_seq)
        else:
            item = _Values(q.data, q.rtype, q.timestamp_ns, q.producer_id, q.producer_seq)
        return self._append([item], sync=sync)[0]

    async def drain(self) -> None:
        """Wait for every asyncio append of this topic to be confirmed."""
        if self._async is not None:
            await self._async.drain()

    def needs_rotation(self, size: int) -> bool:
        base = self.active.name.base
        return self._next > base and self._next - base + size > self.config.segment_max_bytes

    def group_room(self) -> int:
        """The largest batch a fresh group buffer takes."""
        return self.store.pool.size - 4096

    def release_group(self, g) -> None:
        """A confirmed group's buffer goes back (the writer may be gone by then)."""
        give_back(self.store.pool, g)

    def _build_group(self, queue, sync: bool, *, pad: bool = False):
        """Fill one group buffer from the head of `queue` and submit it (event loop);
        `pad` ends it on a block boundary even when nothing is left queued."""
        with self._lock:
            self._check_writable()
            g = self._writer.begin(block=False)
            if g is None:
                return None          # every buffer is in flight: wait for a completion
            clock = self.clock
            waiters: list = []
            try:
                with clock.lock:
                    (g.fill, cursor, clock.last_ns, clock.sequence, pending, waiters) = fill_group(
                        queue, g.buf, g.fill, self._next,
                        self.active.name.base + self.config.segment_max_bytes, time.time_ns(),
                        clock.last_ns, clock.sequence, clock.key_prefix, self.producers, AppendResult)
                batches_end = cursor
                if queue or (pad and g.fill - g.head < OVERLAP_BELOW):
                    # Another group follows while this one is in flight: end this
                    # one on a block boundary with a padding record, so the next
                    # does not rewrite its last block and both are really in flight.
                    # (Large groups are bandwidth-bound: there the next one may as
                    # well wait, which the disk streams better than two at once.)
                    cursor += self._pad_to_block(g)
                ticket = self._writer.submit(g, sync=sync)
            except BaseException as exc:
                # fill_group leaves the queue whole when it fails (the appender
                # then fails every queued batch); batches it took learn it here.
                self._writer.release(g)
                for future, _ in waiters:
                    future.set_exception(exc)
                raise
            self._next = cursor
            return _Flight(ticket, g, pending, batches_end, waiters)

    @staticmethod
    def _pad_to_block(g) -> int:
        """Append a padding record up to the next 4 KiB boundary, when it fits;
        returns the bytes added (their offsets count, FORMAT.md section 3)."""
        gap = -g.fill % 4096
        if gap and gap < HEADER_LEN:
            gap += 4096
        if not gap or gap > g.room:
            return 0
        put_padding(g.buf, g.fill, gap)
        g.fill += gap
        return gap

    def add_listener(self, callback) -> None:
        """Call `callback(topic)` whenever the high watermark advances (long polls).

        It runs on whichever thread published the batches, under the topic's
        lock: keep it short and thread-safe (e.g. loop.call_soon_threadsafe).
        """
        self._listeners.append(callback)

    def remove_listener(self, callback) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def append_many(self, batches: Sequence[Sequence], *, record_type: int = RAW) -> list[AppendResult]:
        """Append several batches with one write and one sync (group commit)."""
        return self._append([_Values(recs, record_type) for recs in batches], sync=True)

    def append_encoded(self, specs: Sequence[BatchSpec], *, sync: bool = True) -> list[AppendResult]:
        """Append pre-encoded TLV payloads as batches, durable on return."""
        return self._append(specs, sync=sync)

    def _append(self, items: Sequence, *, sync: bool) -> list[AppendResult]:
        """Encode every batch straight into pooled aligned buffers and write the
        group with as few requests as the buffers allow, then one sync.

        Durability `async` acknowledges after the write and leaves the sync to
        the store's syncer; `wal` acknowledges once the WAL entries are durable.
        """
        sync = sync and self.config.durability == "sync"
        sizes = [_payload_size(it) for it in items]   # validates before a byte is written
        with self._lock:
            self._check_writable()
            if self._async is not None and self._async.flights:
                raise RuntimeError(f"topic {self.name!r} has asyncio appends in flight; "
                                   "append from the event loop with append_async")
            results: list[AppendResult] = []
            pending: list[tuple[int, int, int]] = []
            cursor = self._next
            limit = self.config.segment_max_bytes
            g = self._writer.begin()
            try:
                for it, plen in zip(items, sizes):
                    size = BATCH_OVERHEAD + plen
                    base = self.active.name.base
                    if cursor > base and cursor - base + size > limit:
                        g = self._commit(g, pending, cursor, sync=True)
                        pending = []
                        self._release_group(g)
                        self._seal_locked()
                        g = self._writer.begin()
                    if g is _BIG:
                        g = self._writer.begin()
                    if size > g.room:
                        g = self._flush(g, size)
                    count = it.record_count if isinstance(it, BatchSpec) else len(it.values)
                    ts, low = self.clock.stamp(count, it.timestamp_ns)
                    hdr = self._encode_into(g, it, plen, count, cursor, ts, low)
                    pending.append((cursor, ts, low))
                    if hdr.producer_id:
                        self.producers[hdr.producer_id] = (hdr.producer_seq, cursor)
                    results.append(AppendResult(cursor, cursor + size, count, ts, low))
                    cursor += size
                self._release_group(self._commit(g, pending, cursor, sync=sync))
            except BaseException:
                self._release_group(g)
                if self._writer is not None and self._writer.data_len != self.active.size:
                    self._failed = self._failed or "a group was cut short by an error"
                raise
            return results

    def _encode_into(self, g, it, plen: int, count: int, cursor: int, ts: int, low: int):
        """One batch at the end of the group buffer: records, then its header in front."""
        if g is _BIG:
            payload = it.payload if isinstance(it, BatchSpec) else _encode(it.values, it.record_type)[0]
            hdr_bytes, hdr = encode_batch(payload, count, base_offset=cursor, first_timestamp_ns=ts,
                                          first_key_low=low, producer_id=it.producer_id,
                                          producer_seq=it.producer_seq)
            if self.store.wal is not None:
                self.store.wal.append([(self.id, cursor, [hdr_bytes, payload])], sync=True)
            self._writer.write([hdr_bytes, payload], sync=False)
            return hdr
        start = g.fill
        g.fill += BATCH_OVERHEAD
        if isinstance(it, BatchSpec):
            g.put(it.payload)
        elif it.encoded is not None:
            g.put(it.encoded)
        else:
            g.fill = encode_into(it.values, it.record_type, g.buf, g.fill)
        payload = g.view[start + BATCH_OVERHEAD:g.fill]
        hdr = BatchHeader(cursor, ts, low, ts, count, plen, crc32c.crc32c(payload),
                          it.producer_id, it.producer_seq)
        payload.release()
        g.view[start:start + BATCH_OVERHEAD] = hdr.pack()
        g.batches.append((cursor, start, g.fill))
        return hdr

    def _flush(self, g, size: int):
        """Make room for a batch of `size` bytes: write what the buffer holds
        (unsynced; the group's final write carries the sync). A batch larger than
        a whole buffer is written on its own, through the chunked path."""
        if g is not _BIG and g.has_data:
            self._log(g)
            self._writer.commit(g, sync=False)
            g = self._writer.begin()
        if g is not _BIG and size <= g.room:
            return g
        if g is not _BIG:
            self._writer.release(g)
        return _BIG

    def _commit(self, g, pending: list, cursor: int, *, sync: bool):
        """Write the group's last buffer (with the sync), then publish its batches."""
        try:
            if g is _BIG:
                if sync and self.store.wal is None:
                    self._writer.sync()
            elif self.store.wal is not None:
                self._log(g)          # durable in the WAL: the segment write may lag
                self._writer.commit(g, sync=False)
            else:
                self._writer.commit(g, sync=sync)
            self._dirty = self._dirty or not sync or self.store.wal is not None
        except WriteFailedError as exc:
            # Nothing of this group is acknowledged; the bytes past the high
            # watermark are cut by recovery, so the topic stops taking writes.
            self._failed = str(exc)
            raise
        self._publish(pending, cursor)
        return None

    def _log(self, g) -> None:
        """In `wal` durability, the group's batches go to the write-ahead log first."""
        wal = self.store.wal
        if wal is not None and g.batches:
            wal.append([(self.id, off, g.view[a:b]) for off, a, b in g.batches], sync=True)

    def _release_group(self, g) -> None:
        if g is not None and g is not _BIG:
            self._writer.release(g)

    def _publish(self, pending: list, cursor: int) -> None:
        """Batches became durable: index them and move the high watermark."""
        seg = self.active
        seg.index.note_batches(pending)
        seg.size = cursor - seg.name.base
        self._high = cursor
        self._next = max(self._next, cursor)
        for cb in self._listeners:
            cb(self)

    def _write(self, chunks: list, pending: list, cursor: int, sync: bool) -> None:
        """Bytes that are already whole batches (replicated data): write and publish."""
        if not chunks:
            return
        try:
            self._writer.write(chunks, sync=sync)
        except WriteFailedError as exc:
            self._failed = str(exc)
            raise
        self._publish(pending, cursor)

    def sync(self) -> None:
        """Make every written batch durable in its segment (and release the WAL's hold)."""
        with self._lock:
            if self._writer:
                self._writer.sync()
                self._dirty = False
                if self.store.wal is not None:
                    self.store.wal.mark_durable(self.id, self._next)

    # -- replicated writes (L3 followers) ----------------------------------------------

    def append_raw(self, data, expected_offset: int, *, sync: bool = True) -> int:
        """Write whole batches exactly as another node stored them; returns the new high watermark.

        `data` must start at `expected_offset`, which must be the high watermark, and be
        nothing but valid batches (checked with the scanner before a byte is written).
        """
        with self._lock:
            self._check_writable()
            if expected_offset != self._high:
                raise OffsetError("INVALID_OFFSET", f"replicated write at {expected_offset}: "
                                  f"topic {self.name!r} ends at {self._high}",
                                  low=self.low_watermark, high=self._high)
            if not len(data):
                return self._high
            scan = scanner.scan_batches(data, expected_offset)
            if scan.error is not None or scan.valid_end != len(data):
                raise CorruptionError(f"replicated data for topic {self.name!r}",
                                      expected_offset + scan.valid_end,
                                      str(scan.error or "trailing bytes"),
                                      f"{len(data)} bytes of batches", f"{scan.valid_end} valid")
            pending = list(zip(scan.base_offset.tolist(), scan.first_ts.tolist(),
                               scan.first_key.tolist()))
            self._write([data], pending, expected_offset + len(data), sync)
            live = scan.producer_id != 0
            for pid, seq, off in zip(scan.producer_id[live].tolist(), scan.producer_seq[live].tolist(),
                                     scan.base_offset[live].tolist()):
                self.producers[pid] = (seq, off)
            if len(scan):
                self.clock.observe(int(scan.last_ts[-1]), int(scan.first_key[-1]),
                                   int(scan.record_count[-1]))
            return self._high

    def name_active(self, t0: int) -> SegmentFile:
        """Give the empty active segment the start time `t0` (a follower takes its leader's names)."""
        with self._lock:
            self._check_writable()
            seg = self.active
            if seg.name.t0 == t0:
                return seg
            if seg.size:
                raise ValueError(f"{seg.path}: holds {seg.size} bytes; only an empty active "
                                 "segment can be renamed")
            self._writer.close()
            self._writer = None
            self._close_read_fd(seg.path)
            new_name = naming.active(seg.name.base, t0)
            new_path = os.path.join(self.folder, new_name.filename)
            os.rename(seg.path, new_path)
            fsutil.fsync_dir(self.folder)
            seg.name, seg.path = new_name, new_path
            self._open_writer()
            return seg

    def truncate_to(self, offset: int) -> int:
        """Cut the active segment back to `offset`, a batch boundary inside it; returns the bytes cut.

        An L3 follower drops what its leader's log does not hold (FORMAT.md section 10).
        Sealed segments are never written, so `offset` below the active segment's base
        raises OffsetError.
        """
        with self._lock:
            self._check_writable()
            seg = self.active
            if offset == self._high:
                return 0
            if offset < seg.name.base or offset > self._high:
                raise OffsetError("OFFSET_OUT_OF_RANGE", f"truncate to {offset}: the active segment "
                                  f"{seg.name.filename} holds [{seg.name.base}, {self._high})",
                                  low=seg.name.base, high=self._high)
            keep = offset - seg.name.base
            if scan_segment(seg.path, seg.name.base, length=keep).valid_end != keep:
                raise OffsetError("INVALID_OFFSET", f"truncate to {offset}: not a batch boundary "
                                  f"in {seg.name.filename}", low=self.low_watermark, high=self._high)
            cut = self._high - offset
            self._writer.close()
            self._writer = None
            self._close_read_fd(seg.path)
            cut_tail(seg.path, keep)
            self._adopt(recover_topic(self.folder, readonly=False,
                                      interval=self.config.index_interval_bytes, warn=self._warn))
            self._open_writer()
            return cut

    # -- sealing ---------------------------------------------------------------------

    def seal_active(self, t1: int | None = None) -> SegmentFile | None:
        """Seal the active segment (if it holds data) and start a new one.

        `t1` names the sealed segment (a follower seals with its leader's `t1`); by default
        it is the current time.
        """
        with self._lock:
            self._check_writable()
            if self.active.size == 0:
                return None
            if t1 is not None and t1 <= self.active.name.t0:
                raise ValueError(f"seal of {self.active.name.filename}: t1 {t1} is not after "
                                 f"t0 {self.active.name.t0}")
            return self._seal_locked(t1)

    def _seal_locked(self, t1: int | None = None) -> SegmentFile:
        seg = self.active
        if t1 is None:
            t1 = max(time.time_ns(), seg.name.t0 + 1)
        sealed_name = seg.name.sealed_as(t1)
        # Padding after the last batch (from pipelined groups) is not kept: the
        # sealed file ends with its last batch, and the next segment starts there.
        self._writer.data_len = seg.size
        self._next = seg.end
        self._writer.finish()
        self._writer = None
        if self.store.wal is not None:
            self.store.wal.mark_durable(self.id, self._next)
        self._close_read_fd(seg.path)
        entries = seg.index.array()
        sparse_index.write_atomic(os.path.join(self.folder, sealed_name.index_filename), entries)
        new_name = naming.active(seg.end, max(time.time_ns(), t1))
        new_path = os.path.join(self.folder, new_name.filename)
        fd = os.open(new_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        sealed_path = os.path.join(self.folder, sealed_name.filename)
        os.rename(seg.path, sealed_path)
        fsutil.fsync_dir(self.folder)
        seg.name, seg.path = sealed_name, sealed_path
        seg.index = sparse_index.SparseIndex(entries, self.config.index_interval_bytes)
        self.segments.append(SegmentFile(new_name, new_path, 0,
                                         sparse_index.SparseIndex.empty(self.config.index_interval_bytes)))
        self._bases.append(new_name.base)
        self._open_writer()
        return seg

    # -- reads -----------------------------------------------------------------------

    def _begin_read(self, seg: SegmentFile) -> _ReadFd:
        """The shared read descriptor of `seg` for one read made after the lock is let go
        (the caller holds it now); `_end_read` gives it back. A seal, truncation or
        retention closes a descriptor only once no read is using it."""
        handle = self._read_fds.get(seg.path)
        if handle is None:
            handle = self._read_fds[seg.path] = _ReadFd(os.open(seg.path, os.O_RDONLY))
        handle.readers += 1
        return handle

    def _end_read(self, handle: _ReadFd) -> None:
        with self._lock:
            handle.readers -= 1
            if handle.closing and not handle.readers:
                os.close(handle.fd)

    def _close_read_fd(self, path: str) -> None:
        handle = self._read_fds.pop(path, None)
        if handle is not None:
            if handle.readers:
                handle.closing = True      # the last reader closes it
            else:
                os.close(handle.fd)

    def _segment_for(self, offset: int) -> SegmentFile:
        i = bisect.bisect_right(self._bases, offset) - 1
        return self.segments[max(i, 0)]

    def check_offset(self, offset: int) -> None:
        low, high = self.low_watermark, self._high
        if offset < low or offset > high:
            raise OffsetError("OFFSET_OUT_OF_RANGE", f"low={low} high={high}", low=low, high=high)

    def read_raw(self, offset: int, max_bytes: int = 1 << 20) -> tuple[bytes, int, int]:
        """Whole batches from `offset` as stored: (data, next_offset, record_count).

        `offset` must be a batch start within [low, high]; equal to the high
        watermark gives empty data. Reads stop at a segment's end.
        """
        with self._lock:
            if offset == HIGH:
                return b"", self._high, 0
            self.check_offset(offset)
            if offset == self._high:
                return b"", offset, 0
            seg = self._segment_for(offset)
            handle = self._begin_read(seg)
            end = seg.end
        try:
            start = seg.index.floor_offset(offset)
            if start is None or start < seg.name.base:
                start = seg.name.base
            if start != offset:
                locate(handle.fd, seg.name.base, start, offset)
            out = read_batches(handle.fd, seg.name.base, end, offset, max_bytes)
            self._read_ahead(handle, out[1] - seg.name.base)
        finally:
            self._end_read(handle)
        return out

    @staticmethod
    def _read_ahead(handle: "_ReadFd", pos: int) -> None:
        """Ask the kernel for the next READ_AHEAD bytes after a read ending at `pos`.

        Appends go around the page cache (O_DIRECT), so a consumer reading what
        was just written reads the disk; keeping a window in flight ahead of it
        lets the disk stream while responses are sent. One hint per half window.
        """
        until = handle.ahead
        if pos + READ_AHEAD // 2 > until:
            start = max(pos, until)
            os.posix_fadvise(handle.fd, start, pos + READ_AHEAD - start, os.POSIX_FADV_WILLNEED)
            handle.ahead = pos + READ_AHEAD

    def read(self, offset: int, max_bytes: int = 1 << 20) -> tuple[list[BatchView], int]:
        data, nxt, _ = self.read_raw(offset, max_bytes)
        return split_batches(data), nxt

    def records(self, start: int | None = None, end: int | None = None) -> Iterator[Record]:
        """Every record from `start` (a batch start; default: the low watermark) to `end`."""
        for chunk in self.scan(start, end):
            for i in range(len(chunk)):
                yield Record(int(chunk.offsets[i]), SortKey(int(chunk.timestamps[i]), int(chunk.key_low[i])),
                             int(chunk.types[i]), bytes(chunk.value(i)), int(chunk.ext_types[i]))

    def scan(self, start: int | None = None, end: int | None = None) -> Iterator[ScanChunk]:
        """One chunk per segment of the records in [start, end), as numpy arrays.

        The record walk runs in the scanner (C); pages are released as the scan
        goes, so a topic larger than memory scans in bounded memory.
        """
        start = self.low_watermark if start is None else start
        end = self._high if end is None else min(end, self._high)
        for seg in list(self.segments):
            seg_end = seg.end
            if seg_end <= start or seg.name.base >= end or seg.size == 0:
                continue
            mm = map_readonly(seg.path, seg.size)
            if mm is None:
                continue
            view = memoryview(mm)
            if self.legacy:
                recs = scanner.scan_legacy(view, seg.name.base)
            else:
                found = scan_segment(seg.path, seg.name.base, length=seg.size)
                if found.error is not None and found.valid_end < seg.size:
                    # Damage in a sealed segment: serve what precedes it, and say so.
                    self._warn(f"{seg.path}: records after byte {found.valid_end} are unreadable "
                               f"({found.error}); run `lance-store verify`")
                batches = found.batches
                recs = scan_records_windowed(mm, batches)
            sel = (recs.offset >= start) & (recs.offset < end)
            yield ScanChunk(seg.name.filename, recs.offset[sel], recs.length[sel], recs.type[sel],
                            recs.timestamp[sel], recs.key_low[sel], recs.value_pos[sel], view,
                            recs.ext_type[sel])
            _close_map(view, mm)

    def offset_for_time(self, ts_ns: int) -> int:
        """Offset of the first batch whose last timestamp is at or after `ts_ns`
        (the high watermark if there is none)."""
        with self._lock:
            segments = list(self.segments)
            high = self._high
        for seg in segments:
            if seg.size == 0:
                continue
            start = seg.index.floor_time(ts_ns)
            with self._lock:
                if seg not in self.segments:
                    continue            # removed by retention meanwhile
                handle = self._begin_read(seg)
            try:
                found = _walk_to_time(handle.fd, seg, seg.name.base if start is None else start,
                                      ts_ns)
            finally:
                self._end_read(handle)
            if found is not None:
                return found
        return high

    # -- retention -------------------------------------------------------------------

    def apply_retention(self, now: float | None = None) -> list[str]:
        """Delete sealed segments past the topic's retention; returns their names.

        Only sealed segments go, oldest first, so no surviving byte changes offset.
        """
        with self._lock:
            self._check_writable()
            ret = self.retention
            if not ret.max_age_secs and not ret.max_bytes:
                return []
            now_ns = int((time.time() if now is None else now) * 1e9)
            total = sum(s.size for s in self.segments)
            doomed = []
            for seg in self.segments[:-1]:
                too_old = ret.max_age_secs and seg.name.t1 is not None and \
                    seg.name.t1 < now_ns - ret.max_age_secs * 1_000_000_000
                too_big = ret.max_bytes and total > ret.max_bytes
                if not (too_old or too_big):
                    break
                doomed.append(seg)
                total -= seg.size
            for seg in doomed:
                self._close_read_fd(seg.path)
                idx = os.path.join(self.folder, seg.name.index_filename)
                if os.path.exists(idx):
                    os.unlink(idx)
                os.unlink(seg.path)
            if doomed:
                fsutil.fsync_dir(self.folder)
                del self.segments[:len(doomed)]
                del self._bases[:len(doomed)]
            return [s.name.filename for s in doomed]

    # -- lifecycle -------------------------------------------------------------------

    def producer_last_seq(self, producer_id: int) -> int | None:
        got = self.producers.get(producer_id)
        if got is None and not self._older_producers:
            with self._lock:
                if not self._older_producers:
                    state = TopicState(self.segments, producers=[])
                    older_producers(state)
                    for pid, seq, off in state.producers:
                        self.producers.setdefault(pid, (seq, off))
                    self._older_producers = True
            got = self.producers.get(producer_id)
        return None if got is None else got[0]

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for path in list(self._read_fds):
                self._close_read_fd(path)

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, id={self.id}, low={self.low_watermark}, high={self._high})"


@dataclass(slots=True)
class _Values:
    """A batch given as a list of records (the library's append path)."""

    values: Sequence
    record_type: int = RAW
    timestamp_ns: int | None = None
    producer_id: int = 0
    producer_seq: int = 0
    encoded: bytes | None = None   # set when the records need the general encoder


@dataclass(slots=True)
class _Request:
    """One caller's batch waiting for a group commit."""

    item: _Values
    event: threading.Event = field(default_factory=threading.Event)
    result: AppendResult | None = None
    error: BaseException | None = None

    def outcome(self) -> AppendResult:
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(slots=True)
class _ReadFd:
    """A segment's read descriptor and the reads using it right now."""

    fd: int
    readers: int = 0
    closing: bool = False
    ahead: int = 0          # the file position the kernel was asked to read ahead to


def _walk_to_time(fd: int, seg: SegmentFile, off: int, ts_ns: int) -> int | None:
    """From batch start `off`, the first batch of `seg` whose last timestamp is at or after
    `ts_ns`, or None."""
    while off < seg.end:
        hdr, size = read_unit(fd, off - seg.name.base)
        if size == 0:
            break
        if hdr is not None and hdr.base_offset != off and off != seg.name.base:
            off = seg.name.base     # a wrong index entry: walk from the segment start
            continue
        if hdr is not None and hdr.last_timestamp_ns >= ts_ns:
            return off
        off += size
    return None


class _Big:
    """Marks a batch larger than a pooled buffer: written through the chunked path."""


_BIG = _Big()


def _payload_size(it) -> int:
    if isinstance(it, BatchSpec):
        if it.record_count <= 0:
            raise ValueError("a batch needs at least one record")
        return len(it.payload)
    if not len(it.values):
        raise ValueError("a batch needs at least one record")
    if isinstance(it.values[0], tuple) or it.record_type > 0xFC:
        it.encoded, _ = encode(it.values, it.record_type)
        return len(it.encoded)
    try:
        return encoded_size(it.values)
    except TypeError:  # (type, value) pairs further on: the general encoder takes them
        it.encoded, _ = encode(it.values, it.record_type)
        return len(it.encoded)


def _encode(records: Sequence, record_type: int) -> tuple[bytes, int]:
    if records and not isinstance(records[0], tuple):
        try:
            return encode_uniform(records, record_type)
        except TypeError:  # a (type, value) pair further on: take the general path
            pass
    return encode(records, record_type)


def _close_map(view: memoryview, mm) -> None:
    """Unmap a chunk's segment unless the caller still holds views into it
    (then the map lives until those views are gone)."""
    try:
        view.release()
        mm.close()
    except BufferError:
        pass
