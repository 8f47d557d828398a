"""SortKey, the 128-bit record order, and the node's hybrid clock.

FORMAT.md section 4: high word = timestamp_ns, low word = node:16|actor:8|seq:40.
"""
from __future__ import annotations

import threading
import time
from typing import NamedTuple

SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1
ACTOR_SHIFT = SEQ_BITS
NODE_SHIFT = SEQ_BITS + 8


class SortKey(NamedTuple):
    """Compared as (high, low), which is the 128-bit unsigned order."""

    timestamp_ns: int
    low: int

    @classmethod
    def make(cls, timestamp_ns: int, node_id: int, actor_id: int, sequence: int) -> "SortKey":
        return cls(timestamp_ns, pack_low(node_id, actor_id, sequence))

    @property
    def node_id(self) -> int:
        return self.low >> NODE_SHIFT

    @property
    def actor_id(self) -> int:
        return (self.low >> ACTOR_SHIFT) & 0xFF

    @property
    def sequence(self) -> int:
        return self.low & SEQ_MASK

    def as_int(self) -> int:
        return (self.timestamp_ns << 64) | self.low

    def __str__(self) -> str:
        return f"{self.timestamp_ns}:{self.node_id}.{self.actor_id}.{self.sequence}"


def pack_low(node_id: int, actor_id: int, sequence: int) -> int:
    if not 0 <= node_id < 1 << 16:
        raise ValueError(f"node_id {node_id} does not fit in 16 bits")
    if not 0 <= actor_id < 1 << 8:
        raise ValueError(f"actor_id {actor_id} does not fit in 8 bits")
    return (node_id << NODE_SHIFT) | (actor_id << ACTOR_SHIFT) | (sequence & SEQ_MASK)


class HybridClock:
    """One per node: timestamps never go backwards, sequences count records.

    `stamp(n)` reserves n consecutive keys for one batch and returns the
    batch's first timestamp and first key_low. Thread-safe, because a broker's
    topics share the clock.
    """

    def __init__(self, node_id: int = 0, actor_id: int = 0):
        pack_low(node_id, actor_id, 0)  # validates
        self.node_id = node_id
        self.actor_id = actor_id
        self.last_ns = 0
        self.sequence = 0
        # Held by every stamp; a caller stamping many batches at once (the C group
        # filler) holds it while it reads and writes last_ns and sequence itself.
        self.lock = threading.Lock()

    def observe(self, last_timestamp_ns: int, first_key_low: int, record_count: int) -> None:
        """Advance past a batch found on disk (recovery, or a new leader)."""
        with self.lock:
            if last_timestamp_ns > self.last_ns:
                self.last_ns = last_timestamp_ns
            if (first_key_low >> ACTOR_SHIFT) == (self.node_id << 8 | self.actor_id):
                nxt = (first_key_low & SEQ_MASK) + record_count
                # Sequences wrap at 2^40; the newest batch's is what counts, so
                # callers observe batches oldest first.
                self.sequence = nxt & SEQ_MASK

    @property
    def key_prefix(self) -> int:
        """key_low's node and actor bits; a stamp adds the sequence."""
        return pack_low(self.node_id, self.actor_id, 0)

    def stamp(self, record_count: int, timestamp_ns: int | None = None) -> tuple[int, int]:
        wall = time.time_ns() if timestamp_ns is None else timestamp_ns
        with self.lock:
            ts = wall if wall > self.last_ns else self.last_ns + 1
            self.last_ns = ts
            low = pack_low(self.node_id, self.actor_id, self.sequence)
            self.sequence = (self.sequence + record_count) & SEQ_MASK
        return ts, low
