"""The leader's side of L3 replication: its log turned into replicate messages.

Owns how stored segments map onto messages (segment names, write offsets, the NEW_SEGMENT,
ROTATE_AFTER and NEW_EPOCH flags); it reads a `lance_store` topic and never writes one.
Live writes and catch-up from disk both go through `messages_from()`, so a follower sees
the same messages whichever path the bytes took.
"""
from __future__ import annotations

import bisect
from typing import Iterator

from lance_store import Topic
from lance_store.segment import naming

from .epochs import EpochsFile
from .wire import NEW_EPOCH, NEW_SEGMENT, ROTATE_AFTER, Replicate


def messages_from(topic: Topic, start: int, *, epoch: int, committed: int,
                  epochs: EpochsFile | None = None, max_bytes: int = 1 << 20,
                  end: int | None = None) -> Iterator[Replicate]:
    """Messages that bring a follower whose log ends at `start` up to `end` (a batch
    boundary; default: the high watermark), at most `max_bytes` of payload each (a larger
    batch goes whole), never crossing a segment.

    - A write at a segment's first byte carries NEW_SEGMENT.
    - The write that reaches the end of a sealed segment carries ROTATE_AFTER with the
      leader's `t1`. A follower starting exactly at a segment boundary first gets the seal
      of the segment before it again (empty payload), which it accepts whether or not it
      had sealed it already.
    - The write that starts at this leader's own entry in `epochs` carries NEW_EPOCH, and no
      message spans that entry. When the leader has not written in its epoch yet, the last
      message is an empty NEW_EPOCH marker at its end, so followers record the epoch at once.
    - A follower at the start of an empty active segment gets an empty NEW_SEGMENT marker,
      so that its active segment takes the leader's name before any data arrives.
    """
    end = topic.high_watermark if end is None else min(end, topic.high_watermark)
    own = [e.start_offset for e in (epochs.entries if epochs else ()) if e.epoch == epoch]
    own_start = own[0] if own else None
    segments = list(topic.segments)
    bases = [s.name.base for s in segments]
    i = bisect.bisect_right(bases, start) - 1
    if i < 0 or start < topic.low_watermark or start > end:
        raise ValueError(f"topic {topic.name!r}: start {start} is outside "
                         f"[{topic.low_watermark}, {end}]")
    if i > 0 and start == bases[i]:
        prev = segments[i - 1]
        yield Replicate(epoch, committed, topic.id, start, _active_name(prev), prev.size, b"",
                        ROTATE_AFTER, prev.name.t1)
    offset = start
    while offset < end:
        seg = segments[bisect.bisect_right(bases, offset) - 1]
        limit = min(max_bytes, end - offset)
        if own_start is not None and offset < own_start < end:
            limit = min(limit, own_start - offset)   # own_start is a batch boundary
        data, nxt, _ = topic.read_raw(offset, limit)   # stops at the segment's end, as seg's
        if not data:
            return
        write_offset = offset - seg.name.base
        flags = NEW_SEGMENT if write_offset == 0 else 0
        if offset == own_start:
            flags |= NEW_EPOCH
        t1 = 0
        if seg.sealed and nxt == seg.end:
            flags |= ROTATE_AFTER
            t1 = seg.name.t1
        yield Replicate(epoch, committed, topic.id, nxt, _active_name(seg), write_offset, data,
                        flags, t1)
        offset = nxt
    if offset == end == topic.high_watermark:
        # At the log's end, in the active segment: mark what no data message has carried.
        active = segments[-1]
        write_offset = offset - active.name.base
        marker = NEW_EPOCH if own_start == offset else 0
        if write_offset == 0:
            marker |= NEW_SEGMENT   # an empty active segment: the follower takes its name
        if marker:
            yield Replicate(epoch, committed, topic.id, offset, _active_name(active), write_offset,
                            b"", marker)


def _active_name(seg) -> str:
    """The segment's name while it was active: the name a replicated write refers to."""
    return naming.active(seg.name.base, seg.name.t0).filename
