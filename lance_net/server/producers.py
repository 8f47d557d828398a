"""Idempotent producers: the last sequence of each (topic, producer), and what a new batch is.

Owns sequence admission (LWP.md "Idempotent producers"); the ids come from the store's node.json
counter, and after a restart the last sequence from the topic's batch headers
(Topic.producer_last_seq, read off the event loop when a producer is bound).
"""
from __future__ import annotations

from .ingest import Ticket

NEW = "new"
DUPLICATE = "duplicate"
GAP = "gap"


class ProducerSequence:
    """One producer's sequence on one topic.

    `last` is the highest sequence accepted (durable or still being written),
    `durable` the highest one known on disk; None when there is none.
    """

    __slots__ = ("last", "durable", "inflight")

    def __init__(self, last: int | None):
        self.last = last
        self.durable = last
        self.inflight: dict[int, Ticket] = {}

    @property
    def expected(self) -> int:
        return 1 if self.last is None else self.last + 1

    def admit(self, seq: int) -> tuple[str, Ticket | None]:
        """(NEW, None), (DUPLICATE, the original's ticket or None when it is durable), or (GAP, None)."""
        if self.last is not None and seq <= self.last:
            return DUPLICATE, self.inflight.get(seq)
        if seq != self.expected:
            return GAP, None
        return NEW, None

    def accept(self, seq: int, ticket: Ticket) -> None:
        self.last = seq
        self.inflight[seq] = ticket
        ticket.add_done_callback(lambda t: self._settled(seq, t))

    def _settled(self, seq: int, ticket: Ticket) -> None:
        self.inflight.pop(seq, None)
        if ticket.error is None:
            self.durable = seq if self.durable is None else max(self.durable, seq)
            self.last = seq if self.last is None else max(self.last, seq)
        else:
            # Not written: the producer must send this sequence again, so it is
            # expected next (later in-flight batches of the same topic fail too).
            self.last = self.durable


class ProducerBook:
    """Every producer sequence this broker has seen since it started."""

    def __init__(self) -> None:
        self._sequences: dict[tuple[int, int], ProducerSequence] = {}

    def get(self, topic_id: int, producer_id: int) -> ProducerSequence | None:
        return self._sequences.get((topic_id, producer_id))

    def add(self, topic_id: int, producer_id: int, last: int | None) -> ProducerSequence:
        """The sequence of (topic, producer), starting from `last` when it is new here
        (another connection may have added it meanwhile: that one stays)."""
        return self._sequences.setdefault((topic_id, producer_id), ProducerSequence(last))

    def forget_topic(self, topic_id: int) -> None:
        for key in [k for k in self._sequences if k[0] == topic_id]:
            del self._sequences[key]
