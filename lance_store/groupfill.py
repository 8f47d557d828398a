"""Filling one write group from the asyncio queue: batch headers, records, clock stamps.

The C kernel (`_native._encode.fill_group`) does it without a Python step per batch;
`fill_group_py` is its twin and reference (`LANCE_NO_EXTENSIONS=1` forces it).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import crc32c

from .records import encode_into
from .segment.header import BATCH_OVERHEAD, BatchHeader
from .sortkey import SEQ_MASK


class Queued(NamedTuple):
    """One batch waiting in a topic's asyncio queue, in the shape the kernel reads.

    `data` is the TLV payload when `rtype` is -1, else the list of values to
    encode as records of type `rtype`.
    """

    size: int                       # payload bytes
    future: object                  # asyncio.Future resolved with the AppendResult
    data: object
    rtype: int
    count: int
    timestamp_ns: int | None
    producer_id: int
    producer_seq: int


def fill_group_py(queue, buf, fill: int, cursor: int, cursor_limit: int, wall_ns: int,
                  last_ns: int, sequence: int, key_prefix: int, producers: dict, result_type):
    """Take batches from the head of `queue` while they fit `buf` and stay below
    `cursor_limit` (the first is always taken, or BufferError), writing each at
    buf[fill:] as header + records, stamped by the hybrid clock's rule.

    Returns (fill, cursor, last_ns, sequence, pending, waiters): pending holds
    (offset, ts, key_low) per batch, waiters (future, result). The caller holds
    the topic's and the clock's locks.
    """
    view = memoryview(buf)
    pending, waiters = [], []
    try:
        while len(queue) > len(pending):
            q = queue[len(pending)]
            total = BATCH_OVERHEAD + q.size
            if total > len(buf) - fill or cursor + total > cursor_limit:
                if pending:
                    break
                raise BufferError(f"a batch of {total} bytes does not fit a group with "
                                  f"{len(buf) - fill} bytes left")
            start = fill + BATCH_OVERHEAD
            end = start + q.size
            if q.rtype < 0:
                if len(q.data) != q.size:
                    raise ValueError(f"queued batch {len(pending)}: payload of {len(q.data)} bytes, "
                                     f"size says {q.size}")
                view[start:end] = q.data
            elif encode_into(q.data, q.rtype, view[:end], start) != end:
                raise ValueError(f"queued batch {len(pending)}: records do not take {q.size} bytes")
            wall = wall_ns if q.timestamp_ns is None else q.timestamp_ns
            ts = wall if wall > last_ns else last_ns + 1
            last_ns = ts
            low = key_prefix | (sequence & SEQ_MASK)
            sequence = (sequence + q.count) & SEQ_MASK
            hdr = BatchHeader(cursor, ts, low, ts, q.count, q.size, crc32c.crc32c(view[start:end]),
                              q.producer_id, q.producer_seq)
            view[fill:start] = hdr.pack()
            pending.append((cursor, ts, low))
            waiters.append((q.future, result_type(cursor, cursor + total, q.count, ts, low)))
            if q.producer_id:
                producers[q.producer_id] = (q.producer_seq, cursor)
            fill = end
            cursor += total
    finally:
        view.release()
    # Only a group filled whole leaves the queue: after an error every batch is
    # still queued, where the caller fails them all.
    for _ in pending:
        queue.popleft()
    return fill, cursor, last_ns, sequence, pending, waiters


def _load():
    if os.environ.get("LANCE_NO_EXTENSIONS", "") not in ("", "0"):
        return fill_group_py, "python"
    try:
        from ._native._encode import fill_group as kernel
    except ImportError:
        return fill_group_py, "python"
    return kernel, "c"


# fill_group: the C kernel when built, else the Python twin.
fill_group, KERNEL = _load()
