"""The leader's commit rule, slow-follower eviction, and the failover log comparison: pure logic.

Owns arithmetic on offsets and epochs only; no clocks, sockets or files (the broker feeds
it confirmations and reads the committed offset back).

Rules:
1. The cluster has N members (the leader included); an acknowledgement needs the batch
   durable on `required = N // 2 + 1` of them. N is the configured membership, never the
   set currently reachable, so losing or evicting followers never lowers `required`.
2. The committed offset is the highest offset that at least `required` members (the
   leader counting as one) have confirmed durable. It never moves backwards, and it moves
   only past the leader's own epoch start: a majority must hold a byte this leader wrote,
   so that a majority records its epoch (Raft's rule of committing by counting only
   entries of the current term; without it, bytes of an older epoch counted on a majority
   could still be replaced by a node whose last epoch is higher). The leader's epoch start
   itself is committed once a majority has recorded the epoch there (`record_epoch`): a
   future leader must then be at least as up to date as one of them, so it holds every byte
   below that start, and a leader that has nothing to write yet still commits its
   predecessors' bytes.
3. A slow follower may be evicted from the in-sync set (the leader stops streaming live
   writes to it and catches it up from disk instead) only while the members left in sync
   still number at least `required`; it rejoins when it confirms the committed offset
   again. Eviction changes who is streamed to, never what counts as a copy: a copy an
   evicted follower confirms durable is still a copy.
4. At failover a log is more up to date than another if its last epoch is higher, or the
   epochs are equal and its end is higher (FORMAT.md section 10).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


def required_copies(cluster_size: int) -> int:
    """Durable copies (leader included) an acknowledgement needs in a cluster of this size."""
    if cluster_size < 1:
        raise ValueError(f"cluster_size: expected at least 1, found {cluster_size}")
    return cluster_size // 2 + 1


def committed_offset(leader_durable: int, confirmed: Mapping[int, int], cluster_size: int) -> int:
    """The offset held durably by `required_copies(cluster_size)` members.

    `confirmed` maps follower ids to their confirmed offsets; followers absent from it
    count as holding nothing.
    """
    need = required_copies(cluster_size)
    if len(confirmed) + 1 > cluster_size:
        raise ValueError(f"confirmed: expected at most {cluster_size - 1} followers, "
                         f"found {len(confirmed)}")
    offsets = sorted([leader_durable, *confirmed.values()], reverse=True)
    return offsets[need - 1] if len(offsets) >= need else 0


@dataclass(frozen=True, slots=True, order=True)
class LogPosition:
    """Where a log ends, ordered the way failover compares logs: epoch first, then offset."""

    last_epoch: int
    end_offset: int


def most_up_to_date(positions: Mapping[int, LogPosition]) -> int:
    """The node whose log is the most up to date (the lowest id among equals)."""
    if not positions:
        raise ValueError("positions: expected at least one node")
    return min(positions, key=lambda node: (_neg(positions[node]), node))


def _neg(p: LogPosition) -> tuple[int, int]:
    return (-p.last_epoch, -p.end_offset)


def may_accept_writes(own: LogPosition, others: Mapping[int, LogPosition], cluster_size: int) -> bool:
    """Whether a newly elected leader holds every acknowledged batch and may take writes.

    It must know the positions of a majority (itself included) and be at least as up to
    date as each of them: every acknowledged batch is on a majority, any two majorities
    share a node, so the most up-to-date log of a majority holds it.
    """
    if 1 + len(others) < required_copies(cluster_size):
        return False
    return all(own >= p for p in others.values())


def behind_on(own: Mapping[int, LogPosition], others: Mapping[int, Mapping[int, LogPosition]],
              cluster_size: int) -> list[int]:
    """The topics for which a newly elected leader may not take writes yet (empty: it may).

    `own` maps topic ids to this node's positions, `others` node ids to theirs; a topic a
    node does not report counts as empty there, and a topic only others report counts as
    empty here.
    """
    if 1 + len(others) < required_copies(cluster_size):
        return sorted(set(own).union(*others.values()))
    empty = LogPosition(0, 0)
    topics = set(own).union(*others.values())
    return sorted(t for t in topics
                  if not may_accept_writes(own.get(t, empty),
                                           {n: p.get(t, empty) for n, p in others.items()},
                                           cluster_size))


class QuorumTracker:
    """The commit state of one topic on its leader."""

    def __init__(self, leader_id: int, members: Iterable[int], *, epoch_start: int = 0,
                 committed: int = 0):
        self.leader_id = leader_id
        self.epoch_start = epoch_start
        self.members = frozenset(members) | {leader_id}
        self.required = required_copies(len(self.members))
        self.leader_durable = max(committed, epoch_start)
        self.confirmed: dict[int, int] = {n: 0 for n in self.members if n != leader_id}
        self.in_sync: set[int] = set(self.confirmed)
        self.recorded: set[int] = {leader_id}    # members whose epochs file holds this epoch
        self.committed = committed

    def _recompute(self) -> int:
        candidate = committed_offset(self.leader_durable, self.confirmed, len(self.members))
        if candidate > self.committed and (candidate > self.epoch_start or self._start_recorded()):
            self.committed = candidate
        return self.committed

    def _start_recorded(self) -> bool:
        """Whether a majority holds the log up to the epoch start under this epoch's entry."""
        holders = 1 + sum(1 for n in self.recorded
                          if n != self.leader_id and self.confirmed[n] >= self.epoch_start)
        return holders >= self.required

    def record_epoch(self, node_id: int) -> int:
        """The follower wrote this leader's epochs entry (it answered a NEW_EPOCH message)."""
        if node_id not in self.confirmed:
            raise KeyError(f"node {node_id} is not a follower of this topic "
                           f"(members {sorted(self.members)})")
        self.recorded.add(node_id)
        return self._recompute()

    def leader_wrote(self, durable_offset: int) -> int:
        """The leader's own log is durable up to this offset; returns the committed offset."""
        self.leader_durable = max(self.leader_durable, durable_offset)
        return self._recompute()

    def confirm(self, node_id: int, offset: int) -> int:
        """A follower confirmed its log durable up to `offset`; returns the committed offset.

        An evicted follower that has caught up to the committed offset is in sync again.
        """
        if node_id not in self.confirmed:
            raise KeyError(f"node {node_id} is not a follower of this topic "
                           f"(members {sorted(self.members)})")
        self.confirmed[node_id] = max(self.confirmed[node_id], offset)
        if node_id not in self.in_sync and self.confirmed[node_id] >= self.committed:
            self.in_sync.add(node_id)
        return self._recompute()

    def reset_follower(self, node_id: int, offset: int) -> None:
        """A follower truncated its log (resync): its confirmations restart at `offset`."""
        if node_id not in self.confirmed:
            raise KeyError(f"node {node_id} is not a follower of this topic")
        self.confirmed[node_id] = offset
        if offset < self.committed:
            self.in_sync.discard(node_id)

    def can_evict(self, node_id: int) -> bool:
        """Whether evicting the follower leaves at least `required` members in sync."""
        # After it goes, the leader and len(in_sync) - 1 followers remain in sync.
        return node_id in self.in_sync and len(self.in_sync) >= self.required

    def evict(self, node_id: int) -> bool:
        """Stop waiting for a slow follower; refused (False) when that would leave fewer than
        `required` members in sync, since the required number of copies never shrinks."""
        if not self.can_evict(node_id):
            return False
        self.in_sync.discard(node_id)
        return True

    def lagging(self, max_lag_bytes: int) -> list[int]:
        """In-sync followers more than `max_lag_bytes` behind the leader, slowest first."""
        slow = [n for n in self.in_sync if self.leader_durable - self.confirmed[n] > max_lag_bytes]
        return sorted(slow, key=lambda n: (self.confirmed[n], n))

    def acknowledgeable(self, end_offset: int) -> bool:
        """Whether a batch ending at `end_offset` may be acknowledged (the lease aside)."""
        return end_offset <= self.committed
