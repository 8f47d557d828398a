"""A follower's side of L3 replication: applying the leader's writes to a local data directory.

Owns the rules a follower enforces (fencing, exact positions, matching segment names,
the epochs file, truncation back to the leader's log); it reads decoded messages from
`wire` and writes through `lance_store` topics, and never touches a socket.

Rules:
1. Fencing: the follower remembers the highest epoch it has seen (preambles, messages,
   and the last epoch of every epochs file at start). A preamble or message with an older
   epoch raises StaleEpoch: the stream must be closed and nothing is written.
2. Position: a write lands only where the leader says: its start is the topic's high
   watermark, in the active segment of the leader's name, at the leader's write offset.
   Anything else is answered with status RESYNC and the follower's end; nothing is written.
   So is a heartbeat from a leader whose log ends before this node's.
3. Names: NEW_SEGMENT gives the empty active segment the leader's name, ROTATE_AFTER seals
   it with the leader's `t1`, so both nodes hold the same file names.
4. Epochs: NEW_EPOCH writes `epoch start` to the epochs file (durably) before the data.
   Entries of the leader's file learnt at reconciliation are written when the data reaches
   their start, so the file never claims an epoch for bytes the node does not hold.
5. Reconciliation: before following a leader, the follower cuts its log to the divergence
   point of the two epochs files (`epochs.divergence_point`). Only the active segment can
   be cut; a divergence inside a sealed segment needs a full resync of the topic. Bytes
   written before the cluster existed are shared only when the cluster was seeded from the
   copy this node was restored from.
6. Replies are sent after the bytes are durable: `apply()` returns once they are.
7. A heartbeat for topic 0 (no topic has that id) only says the stream is alive: it is
   answered OK, so a leader of no topics still shows its followers it is there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from lance_store import (CorruptionError, OffsetError, ReadOnlyError, Store, Topic, UnknownTopicError,
                         WriteFailedError)
from lance_store.segment import naming

from .epochs import EpochEntry, EpochsFile, divergence_point
from .quorum import LogPosition
from .wire import FollowerReply, Preamble, Replicate, Status


class ReplicationError(Exception):
    """A follower cannot apply what its leader sent."""


class StaleEpoch(ReplicationError):
    """A stream or message from a leader older than one this follower has seen: close it."""

    def __init__(self, found: int, highest: int, what: str):
        super().__init__(f"{what}: epoch {found} is older than epoch {highest} already seen; "
                         "the stream is fenced off")
        self.found = found
        self.highest = highest


class FullResyncNeeded(ReplicationError):
    """The log diverges inside a sealed segment, which is never rewritten in place."""


class ForeignSeed(ReplicationError):
    """A node holds bytes from before the cluster, restored from another copy than the one
    the cluster was seeded from: it must not lead with them."""


@dataclass
class TopicReplica:
    """What the follower keeps per topic beside the data: epochs and commit state."""

    topic: Topic
    epochs: EpochsFile
    committed: int = 0
    pending_epochs: list[EpochEntry] = field(default_factory=list)  # leader's, not yet reached


class Follower:
    """Applies replicate messages to `store` for the node `node_id`."""

    def __init__(self, store: Store, node_id: int, *,
                 topic_for: Callable[[int], Topic] | None = None):
        self.store = store
        self.node_id = node_id
        self.topic_for = topic_for or store.topic_by_id
        self.replicas: dict[int, TopicReplica] = {}
        self.highest_epoch = 0
        self.leader: Preamble | None = None
        for topic in store.topics():
            if topic.id and not topic.readonly:
                self.highest_epoch = max(self.highest_epoch, self.replica(topic.id).epochs.last_epoch)

    def replica(self, topic_id: int) -> TopicReplica:
        rep = self.replicas.get(topic_id)
        if rep is None or rep.topic is not self.topic_for(topic_id):
            topic = self.topic_for(topic_id)
            epochs = EpochsFile(topic.folder)
            # A crash between an epochs entry and its data leaves an entry past the log end.
            epochs.truncate(topic.high_watermark + 1)
            rep = TopicReplica(topic, epochs)
            self.replicas[topic_id] = rep
        return rep

    # -- fencing -------------------------------------------------------------------------

    def observe_epoch(self, epoch: int, what: str) -> None:
        if epoch < self.highest_epoch:
            raise StaleEpoch(epoch, self.highest_epoch, what)
        self.highest_epoch = epoch

    def accept_preamble(self, preamble: Preamble) -> None:
        """A leader opened a stream; StaleEpoch when an older leader it is."""
        self.observe_epoch(preamble.epoch, f"stream from node {preamble.leader_node_id}")
        self.leader = preamble

    # -- applying --------------------------------------------------------------------------

    def _reply(self, msg: Replicate, status: Status, rep: TopicReplica | None) -> FollowerReply:
        end = rep.topic.high_watermark if rep else 0
        return FollowerReply(msg.epoch, msg.topic_id, end, status, self.node_id)

    def apply(self, msg: Replicate) -> FollowerReply:
        """Apply one message; the reply says where this node's durable log ends."""
        self.observe_epoch(msg.epoch, f"message for topic {msg.topic_id}")
        if msg.topic_id == 0 and msg.is_heartbeat:
            return FollowerReply(msg.epoch, 0, 0, Status.OK, self.node_id)   # the stream's pulse
        try:
            rep = self.replica(msg.topic_id)
        except UnknownTopicError:
            return self._reply(msg, Status.ERROR, None)
        topic = rep.topic
        if msg.payload or msg.flags:
            status = self._write(rep, msg)
            if status is not Status.OK:
                return self._reply(msg, status, rep)
        elif topic.high_watermark > msg.global_offset:
            # Bytes past the leader's end were never the leader's: this log must be reconciled.
            return self._reply(msg, Status.RESYNC, rep)
        rep.committed = max(rep.committed, min(msg.committed_offset, topic.high_watermark))
        return self._reply(msg, Status.OK, rep)

    def _write(self, rep: TopicReplica, msg: Replicate) -> Status:
        topic = rep.topic
        start = msg.start_offset
        if start != topic.high_watermark:
            return Status.RESYNC
        name = naming.parse(msg.segment_name)
        if name is None:
            return Status.ERROR
        active = topic.active
        if (msg.rotate_after and not msg.payload and not msg.new_segment
                and len(topic.segments) > 1 and topic.segments[-2].name == name.sealed_as(msg.sealed_t1_ns)):
            return Status.OK  # a seal this node already made (a resent one after a reconnect)
        if msg.new_segment:
            if active.name.base != name.base or (active.size and active.name != name):
                return Status.RESYNC
            topic.name_active(name.t0)
        elif active.name != name or active.size != msg.write_offset:
            return Status.RESYNC
        self._note_epochs(rep, msg)
        if msg.payload:
            try:
                topic.append_raw(msg.payload, start)
            except (CorruptionError, OffsetError, ReadOnlyError, WriteFailedError):
                # Damaged batches, or a topic the kernel stopped taking writes for: nothing
                # of this message is acknowledged, and no epoch may claim bytes not written.
                rep.epochs.truncate(topic.high_watermark + 1)
                return Status.ERROR
        rep.pending_epochs = [e for e in rep.pending_epochs if e.start_offset > msg.global_offset]
        if msg.rotate_after:
            topic.seal_active(msg.sealed_t1_ns)
        return Status.OK

    def _note_epochs(self, rep: TopicReplica, msg: Replicate) -> None:
        """Write the epochs entries that start inside this write (before its bytes)."""
        start, end = msg.start_offset, msg.global_offset
        for entry in rep.pending_epochs:
            if start <= entry.start_offset <= end and entry.epoch > rep.epochs.last_epoch:
                rep.epochs.append(entry.epoch, entry.start_offset)
        if msg.new_epoch and msg.epoch > rep.epochs.last_epoch:
            rep.epochs.append(msg.epoch, start)

    # -- reconciliation --------------------------------------------------------------------

    def reconcile(self, topic_id: int, leader_epochs: Sequence[EpochEntry],
                  leader_end: int | None = None, *, seeded: bool = False) -> int:
        """Cut this node's log of the topic back to where it agrees with the leader's.

        `leader_epochs` is the leader's epochs file (as `Coordinator.leader_epochs` returns
        it). `leader_end` may be left out: whatever this node holds of the leader's own
        epoch came from that leader, which never cuts its own log while it leads.
        `seeded`: this node's data directory and the cluster were seeded from one copy, so
        the bytes both logs held before the cluster existed are the same.
        Returns the offset the leader should stream from. Raises FullResyncNeeded when the
        logs part inside a sealed segment.
        """
        if leader_end is None:
            leader_end = 2**64 - 1
        rep = self.replica(topic_id)
        topic = rep.topic
        end = topic.high_watermark
        point = divergence_point(leader_epochs, leader_end, rep.epochs.entries, end, seeded=seeded)
        if point < end:
            self.truncate(topic_id, point)
        # Entries from `point` on describe no byte the two logs share (even with none cut).
        rep.epochs.truncate(point)
        rep.pending_epochs = [e for e in leader_epochs if e.start_offset >= point
                              and e.epoch > rep.epochs.last_epoch]
        return topic.high_watermark

    def truncate(self, topic_id: int, offset: int) -> int:
        """Cut the topic's log (and its epochs file) back to `offset`; returns the bytes cut."""
        rep = self.replica(topic_id)
        topic = rep.topic
        if offset < topic.active.name.base:
            raise FullResyncNeeded(
                f"topic {topic.name!r}: the log must be cut to {offset}, inside sealed segments "
                f"(the active segment starts at {topic.active.name.base}); copy the topic anew")
        cut = topic.truncate_to(offset)
        rep.epochs.truncate(offset)
        rep.committed = min(rep.committed, offset)
        return cut

    def predates_cluster(self, topic_id: int) -> bool:
        """Whether the topic holds bytes written before any leader (a seeded copy's)."""
        rep = self.replica(topic_id)
        return rep.epochs.first_start(rep.topic.high_watermark) > 0

    def committed_offset(self, topic_id: int) -> int:
        """Where Fetch may read up to on this follower: what a majority holds."""
        rep = self.replicas.get(topic_id)
        return rep.committed if rep else 0

    def position(self, topic_id: int) -> LogPosition:
        """(last epoch, end offset) of this node's log of the topic, for failover comparisons."""
        rep = self.replica(topic_id)
        return LogPosition(rep.epochs.last_epoch, rep.topic.high_watermark)
