"""The broker's L3 role: joining, following and leading a cluster, and when a batch may be acked.

Owns the node's replication state (who leads as far as this node knows, the stream it
follows, its leadership with one tracker per topic and one stream per follower) and the ack
gate; the rules it applies are lance_net.replication's (docs/replication.md, "What the
broker does with these pieces").

Transitions run one at a time (`_step`), on every change of the leader key, of the lease,
or of the stream this node follows:
- no leader: publish this node's positions (it follows no stream, so they stay true) and
  campaign;
- won: wait for a majority's positions; resign if behind, else register the topics etcd does
  not list yet (a data directory restored from a DR copy), record the epoch in every topic,
  publish it, stream to every follower, and take writes once a majority recorded it;
- another node leads: take its stream (withdrawing the positions first, since the log is
  about to grow) and redirect writes to it;
- the leadership or the followed leader went: stop, and publish the positions again.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import TYPE_CHECKING

from lance_net.protocol import NOT_LEADER, QUORUM_NOT_REACHED, error_message
from lance_net.replication import (Coordinator, EtcdClient, EtcdError, Follower, ForeignSeed,
                                   LeaderInfo, NotLeaderError, QuorumTracker, ReplicationError,
                                   StaleEpoch, required_copies)
from lance_net.replication.links import InboundLink, OutboundLink
from lance_net.replication.quorum import behind_on
from lance_store import LanceError, Topic

from .options import parse_address
from .refusal import Refused

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("lance_net.server.cluster")

TICK_S = 0.1
RETRY_S = 0.5
NODES_REFRESH_S = 1.0
# A winner that is behind waits this long before campaigning again, so a node that is more
# up to date wins the next round.
BEHIND_BACKOFF_S = 2.0
# A follower that heard nothing from its leader for this long is not ready.
FOLLOWER_SILENCE_S = 3.0


class LeaderTopic:
    """What the leader keeps per topic: the tracker, its epochs file, and acks waiting."""

    __slots__ = ("topic", "tracker", "epochs", "durable", "pending", "announced")

    def __init__(self, topic: Topic, tracker: QuorumTracker, epochs):
        self.topic = topic
        self.tracker = tracker
        self.epochs = epochs
        self.durable = topic.high_watermark   # the leader's own durable end, streamed up to here
        self.pending: deque = deque()         # (ticket, end offset), in log order
        self.announced = 0                    # committed offset long polls were woken for


class Leadership:
    """One leadership of this node: from winning the election to losing or leaving it."""

    def __init__(self, role: ClusterRole, info: LeaderInfo):
        self.role = role
        self.node_id = role.node_id
        self.epoch = info.epoch
        self.members = role.members
        self.topics: dict[int, LeaderTopic] = {}
        self.links: dict[int, OutboundLink] = {}
        self.stopped = False
        self.opened = False
        self._behind: set[int] = set()   # topics whose earlier epochs' bytes are not committed

    # -- what the outbound links use -----------------------------------------------------

    def address_of(self, node_id: int):
        return self.role.addresses.get(node_id)

    def run_read(self, fn, *args):
        return self.role.broker.run_read(fn, *args)

    def confirmed(self, topic_id: int) -> None:
        """A follower confirmed bytes: release the acks now committed, wake long polls."""
        state = self.topics.get(topic_id)
        if state is not None:
            self._release(state)

    # -- life ----------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Opened, and every topic's bytes from earlier epochs committed (a majority recorded
        this epoch), so even a duplicate of an earlier batch may be acknowledged at once."""
        return self.opened and not self.stopped and not self._behind

    async def run(self) -> bool:
        """Check the positions, open every topic, stream to the followers. False: resigned."""
        role = self.role
        coordinator = role.coordinator
        size = len(self.members)
        # Neither following nor taking writes yet: this node's log stands still meanwhile.
        own = await role.own_positions()
        while True:
            if self.stopped:
                return False
            published = await coordinator.positions()
            others = {n: p for n, p in published.items() if n != self.node_id and n in self.members}
            if 1 + len(others) >= required_copies(size):
                behind = behind_on(own, others, size)
                if not behind:
                    break
                log.warning("epoch %d: behind another node on topic(s) %s: resigning", self.epoch,
                            ", ".join(map(str, behind)))
                return False
            await asyncio.sleep(TICK_S)
        await role.register_local_topics(self.epoch)
        await role.sync_topics()
        if self.stopped:
            return False
        role.broker.leadership_began()
        for topic in list(role.broker.topics()):
            await self.open_topic(topic)
        if self.stopped:
            return False   # the positions published since stay: they are current
        # From here on this node's log grows: its published positions would soon be stale.
        await role.withdraw_positions()
        for node in self.members:
            if node != self.node_id:
                link = OutboundLink(self, node)
                self.links[node] = link
                link.start()
        self.opened = True
        log.info("leading: epoch %d, %d topic(s), members %s", self.epoch, len(self.topics),
                 ",".join(map(str, self.members)))
        return True

    async def open_topic(self, topic: Topic) -> None:
        """Before the first write of this epoch: the epochs entry, published, and a tracker."""
        if topic.id in self.topics or topic.readonly:
            return
        role = self.role
        epochs = role.follower.replica(topic.id).epochs
        if epochs.last_epoch != self.epoch:
            await role.broker.run_admin(epochs.append, self.epoch, topic.high_watermark)
        await role.coordinator.publish_epochs(topic.id, epochs.entries, epoch=self.epoch)
        start = epochs.entries[-1].start_offset
        tracker = QuorumTracker(self.node_id, self.members, epoch_start=start)
        state = LeaderTopic(topic, tracker, epochs)
        tracker.leader_wrote(state.durable)
        self.topics[topic.id] = state
        if tracker.committed < start:
            self._behind.add(topic.id)
        self.poke()

    def forget_topic(self, topic_id: int, reason: str) -> None:
        state = self.topics.pop(topic_id, None)
        self._behind.discard(topic_id)
        if state is not None:
            _fail(state.pending, reason)

    def poke(self) -> None:
        for link in self.links.values():
            link.poke()

    async def stop(self, reason: str) -> None:
        self.stopped = True
        await asyncio.gather(*(link.stop() for link in self.links.values()))
        for state in self.topics.values():
            _fail(state.pending, reason)

    # -- the ack gate --------------------------------------------------------------------

    def leader_wrote(self, topic: Topic) -> None:
        state = self.topics.get(topic.id)
        if state is None:
            return
        state.durable = topic.high_watermark
        state.tracker.leader_wrote(state.durable)
        self._release(state)
        self.poke()

    def hold(self, topic: Topic, durable: list) -> None:
        state = self.topics.get(topic.id)
        if state is None or self.stopped:
            _fail(durable, self.role.not_leader())
            return
        state.pending.extend(durable)
        self._release(state)

    def _release(self, state: LeaderTopic) -> None:
        """Acknowledge what a majority holds, while the lease certainly still is ours."""
        committed = state.tracker.committed
        if committed != state.announced:
            state.announced = committed
            if committed >= state.tracker.epoch_start:
                self._behind.discard(state.topic.id)
            self.role.broker.watermarks.advanced(state.topic.id)
        pending = state.pending
        if not pending or not self.role.coordinator.lease.valid():
            return
        acknowledgeable = state.tracker.acknowledgeable
        while pending and acknowledgeable(pending[0][1]):
            pending.popleft()[0].settle(None)

    def tick(self) -> None:
        for state in list(self.topics.values()):
            self._release(state)


def _fail(pending, reason: str) -> None:
    while pending:
        pending.popleft()[0].settle(reason)


class ClusterRole:
    """This node as one member of an L3 cluster (see the module docstring)."""

    def __init__(self, broker: Broker):
        options = broker.options
        rep = options.replication
        self.broker = broker
        self.node_id = options.node_id
        self.members = tuple(rep.members)
        self.coordinator = Coordinator(EtcdClient(list(rep.etcd)), cluster=rep.cluster,
                                       node_id=self.node_id, advertise=options.advertise,
                                       ttl=rep.lease_ttl_s, margin=rep.lease_margin_ms / 1000)
        self.follower = Follower(broker.store, self.node_id)
        self.leader: LeaderInfo | None = None
        self.leading: Leadership | None = None
        self.inbound: InboundLink | None = None
        self.addresses: dict[int, tuple[str, int]] = {}
        self.nodes: list = []
        self.joined = False
        self._lock = asyncio.Lock()
        self._nudge = asyncio.Event()
        self._campaign_after = 0.0
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="cluster"),
                       loop.create_task(self._tick(), name="cluster-tick")]

    async def stop(self) -> None:
        """Leave: hand leadership over (positions published first, then the key deleted)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self.leading is not None:
                await self._stop_leading("NOT_LEADER: this node is shutting down")
                await self.publish_positions()
            if self.inbound is not None:
                self.inbound.close()
            await self.coordinator.close()
        except (EtcdError, OSError) as exc:
            log.warning("leaving the cluster: %s", exc)
        await self.coordinator.client.close()

    async def _run(self) -> None:
        coordinator = self.coordinator
        while not self.joined:
            try:
                await coordinator.start()
                self.joined = True
            except (EtcdError, OSError) as exc:
                log.warning("joining cluster %s through %s: %s", coordinator.cluster,
                            coordinator.client.endpoint, exc)
                await asyncio.sleep(RETRY_S)
        log.info("joined cluster %s as node %d (%s), lease %x", coordinator.cluster, self.node_id,
                 coordinator.advertise, coordinator.lease.id)
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._watch_leader(), name="cluster-leader"),
                        loop.create_task(self._watch_topics(), name="cluster-topics"),
                        loop.create_task(self._watch_lease(), name="cluster-lease")]
        self._nudge.set()
        while True:
            await self._nudge.wait()
            self._nudge.clear()
            try:
                await self._step()
            except (EtcdError, OSError) as exc:
                log.warning("cluster: %s", exc)
                await asyncio.sleep(RETRY_S)
                self._nudge.set()
            except Exception:  # a fault of ours: log it, and keep the node in the cluster
                log.exception("cluster: a role change failed; trying again")
                await asyncio.sleep(RETRY_S)
                self._nudge.set()

    async def _watch_leader(self) -> None:
        while True:
            try:
                async with contextlib.aclosing(self.coordinator.watch_leader()) as changes:
                    async for _ in changes:
                        self._nudge.set()
            except (EtcdError, OSError) as exc:
                log.debug("leader watch: %s", exc)
            await asyncio.sleep(RETRY_S)
            self._nudge.set()

    async def _watch_lease(self) -> None:
        lease = self.coordinator.lease
        while True:
            await lease.lost.wait()
            self._nudge.set()
            await asyncio.sleep(RETRY_S)

    async def _tick(self) -> None:
        """Release acks held while the lease was in doubt; keep member addresses fresh."""
        loop = asyncio.get_running_loop()
        refreshed = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            if self.leading is not None:
                self.leading.tick()
            if self.joined and loop.time() - refreshed > NODES_REFRESH_S:
                refreshed = loop.time()
                try:
                    await self._refresh_nodes()
                except (EtcdError, OSError) as exc:
                    log.debug("nodes: %s", exc)

    async def _refresh_nodes(self) -> None:
        self.nodes = await self.coordinator.nodes()
        addresses = {}
        for node in self.nodes:
            try:
                addresses[node.node_id] = parse_address(node.addr, f"node {node.node_id} address", 0)
            except ValueError:
                log.warning("node %d advertises %r: not HOST:PORT", node.node_id, node.addr)
        self.addresses = addresses

    async def _step(self) -> None:
        """Bring this node's role in line with etcd (see the module docstring)."""
        coordinator = self.coordinator
        if self._closing:
            return
        if coordinator.lease.lost.is_set():
            await self._stop_leading(f"{NOT_LEADER}: this node's lease expired")
            log.warning("lease %x is gone: joining again", coordinator.lease.id)
            await coordinator.start()
        holder = await coordinator.leader()
        self.leader = holder
        lead = self.leading
        if lead is not None and (holder is None or holder.epoch != lead.epoch):
            await self._stop_leading(self.not_leader())
        async with self._lock:
            if self.inbound is not None and (holder is None or self.inbound.epoch != holder.epoch):
                self.inbound.close()
            if self.inbound is None and self.leading is None:
                await self.publish_positions()
        if holder is not None or self.leading is not None or self.node_id not in self.members:
            return
        loop = asyncio.get_running_loop()
        wait = self._campaign_after - loop.time()
        if wait > 0:
            loop.call_later(wait, self._nudge.set)
            return
        won = await coordinator.campaign()
        if won is None:
            self._nudge.set()   # someone else won: see who
            return
        self.leader = won
        self.leading = Leadership(self, won)
        log.info("won the election: epoch %d", won.epoch)
        self._tasks.append(loop.create_task(self._lead(self.leading), name="cluster-lead"))

    async def _lead(self, lead: Leadership) -> None:
        try:
            if await lead.run() or self.leading is not lead:
                return   # leading, or this leadership already ended (another may have begun)
            self._campaign_after = asyncio.get_running_loop().time() + BEHIND_BACKOFF_S
            await self._stop_leading(self.not_leader())
            await self.coordinator.resign()
        except (NotLeaderError, EtcdError, OSError, LanceError, ReplicationError) as exc:
            log.warning("epoch %d: could not take writes: %s", lead.epoch, exc)
            if self.leading is lead:
                await self._stop_leading(self.not_leader())
                with contextlib.suppress(EtcdError, OSError):
                    await self.coordinator.resign()
        self._nudge.set()

    async def _stop_leading(self, reason: str) -> None:
        lead = self.leading
        if lead is None:
            return
        self.leading = None
        log.info("no longer leading epoch %d: %s", lead.epoch, reason)
        await lead.stop(reason)
        await self.broker.leadership_ended(reason)

    # -- positions -----------------------------------------------------------------------

    async def own_positions(self) -> dict:
        """Where each local topic ends; read on the writing thread, after any write queued."""
        follower = self.follower
        return await self.broker.run_admin(
            lambda: {t.id: follower.position(t.id) for t in self.broker.topics() if not t.readonly})

    async def publish_positions(self) -> None:
        await self.coordinator.publish_positions(await self.own_positions())

    async def withdraw_positions(self) -> None:
        await self.coordinator.client.delete(f"{self.coordinator.positions_prefix}{self.node_id}")

    # -- following -----------------------------------------------------------------------

    def inbound_link(self, transport, peer: str) -> InboundLink:
        return InboundLink(self, transport, peer)

    def run_admin(self, fn, *args):
        return self.broker.run_admin(fn, *args)

    async def accept_stream(self, link: InboundLink) -> bool:
        """Take a leader's stream only from the leader etcd names now, and not while leading."""
        preamble = link.preamble
        async with self._lock:
            if link.closed or self._closing:
                return False
            holder = await self.coordinator.leader()
            if self.leading is not None or holder is None or holder.epoch != preamble.epoch \
                    or holder.node_id != preamble.leader_node_id:
                found = "no leader" if holder is None else \
                    f"node {holder.node_id} epoch {holder.epoch}"
                log.info("refused a stream from node %d epoch %d: etcd names %s%s",
                         preamble.leader_node_id, preamble.epoch, found,
                         " (this node leads)" if self.leading else "")
                return False
            try:
                self.follower.accept_preamble(preamble)
            except StaleEpoch as exc:
                log.warning("%s", exc)
                return False
            if self.inbound is not None and self.inbound is not link:
                self.inbound.close()
            await self.withdraw_positions()
            self.inbound = link
            self.leader = holder
            return True

    async def prepare_topic(self, topic_id: int) -> None:
        """The topic exists here and its log is cut back to where it agrees with the leader's."""
        if topic_id not in self.broker.topic_ids():
            await self.sync_topics()
        if topic_id in self.broker.topic_ids():
            epochs = await self.coordinator.leader_epochs(topic_id)
            seeded = await self.coordinator.seed() == self.broker.store.cluster_id
            cut_to = await self.run_admin(
                lambda: self.follower.reconcile(topic_id, epochs, seeded=seeded))
            log.debug("topic %d: following from %d", topic_id, cut_to)

    def applied(self, topic_ids) -> None:
        for topic_id in topic_ids:
            self.broker.watermarks.advanced(topic_id)

    def dropped(self, link: InboundLink) -> None:
        if self.inbound is link:
            self.inbound = None
            self._nudge.set()

    # -- topics --------------------------------------------------------------------------

    async def _watch_topics(self) -> None:
        client = self.coordinator.client
        prefix = self.coordinator.topics_prefix
        while True:
            try:
                revision = await self.sync_topics()
                async with client.watch(prefix, prefix=True, start_revision=revision + 1) as watch:
                    async for event in watch:
                        if event.type == "DELETE":
                            name = event.kv.key.decode()[len(prefix):]
                            topic = self.broker.topic_named(name)
                            if topic is not None:
                                if self.leading is not None:
                                    self.leading.forget_topic(topic.id, self.not_leader())
                                await self.broker.delete_local_topic(topic)
                        else:
                            await self.ensure_topic(json.loads(event.kv.value))
            except (EtcdError, OSError, LanceError) as exc:
                log.warning("topic watch: %s", exc)
            except Exception:  # a fault of ours: the watch starts over with a full sync
                log.exception("topic watch failed")
            await asyncio.sleep(RETRY_S)

    async def register_local_topics(self, epoch: int) -> None:
        """A leader's topics that etcd does not list (its data directory was restored from a DR
        copy) join the cluster with their own ids, and the id counters move past every id the
        directory handed out, so a seeded cluster only resyncs active tails.

        Bytes written before the cluster are shared only by nodes restored from one copy: the
        first leader holding such bytes records its copy as the cluster's seed, and a leader
        restored from another copy may not lead (ForeignSeed).
        """
        coordinator, follower, store = self.coordinator, self.follower, self.broker.store
        local = [t for t in self.broker.topics() if not t.readonly]
        older = await self.run_admin(lambda: [t.name for t in local if follower.predates_cluster(t.id)])
        if older:
            seed = await coordinator.claim_seed(store.cluster_id, epoch=epoch)
            if seed != store.cluster_id:
                raise ForeignSeed(f"topic(s) {', '.join(older)}: hold bytes from before the cluster, "
                                  f"restored from copy {store.cluster_id}; expected the cluster's "
                                  f"seed {seed}")
        listed = {t["name"] for t in await coordinator.topics()}
        for topic in local:
            if topic.name not in listed:
                _, registered = await coordinator.register_topic(topic.info(), epoch=epoch)
                if registered:
                    log.info("topic %s (id %d) registered in cluster %s from this data directory",
                             topic.name, topic.id, coordinator.cluster)
        await coordinator.reserve_ids(next_topic_id=int(store.node.get("next_topic_id", 1)),
                                      next_producer_id=int(store.node.get("next_producer_id", 1)),
                                      epoch=epoch)

    async def sync_topics(self) -> int:
        """Create here every topic etcd lists; returns the revision read."""
        kvs, revision = await self.coordinator.client.range(self.coordinator.topics_prefix,
                                                            prefix=True)
        for kv in kvs:
            await self.ensure_topic(json.loads(kv.value))
        return revision

    async def ensure_topic(self, meta: dict) -> Topic:
        """The local topic of the cluster's metadata: created with its id, retention updated."""
        broker = self.broker
        retention = meta.get("retention") or {}
        local = broker.topic_named(meta["name"])
        if local is not None and local.id != int(meta["id"]):
            await broker.delete_local_topic(local)   # an older topic of the same name
            local = None
        if local is None:
            return await broker.create_local_topic(meta["name"], retention, topic_id=int(meta["id"]))
        if local.retention.as_dict() != {"max_age_secs": int(retention.get("max_age_secs", 0)),
                                         "max_bytes": int(retention.get("max_bytes", 0))}:
            await broker.run_admin(local.set_retention, int(retention.get("max_age_secs", 0)),
                                   int(retention.get("max_bytes", 0)))
        return local

    # -- what the broker asks ------------------------------------------------------------

    def not_leader(self) -> str:
        holder = self.leader
        if holder is not None and holder.node_id != self.node_id:
            return error_message(NOT_LEADER, f"redirect to {holder.addr}")
        return error_message(NOT_LEADER, "leader unknown")

    def write_refusal(self) -> str | None:
        """None when this node may take a write now, else the refusal to send."""
        lead = self.leading
        if lead is None:
            return self.not_leader()
        if not lead.writable:
            return error_message(QUORUM_NOT_REACHED, f"epoch {lead.epoch}: a majority has not "
                                 "recorded this leader yet")
        if not self.coordinator.lease.valid():
            return error_message(QUORUM_NOT_REACHED, "the lease is not certainly valid")
        return None

    def _writing(self) -> Leadership:
        refusal = self.write_refusal()
        if refusal is not None:
            raise Refused(refusal)
        return self.leading

    def gate(self, topic: Topic, durable: list) -> None:
        lead = self.leading
        if lead is None:
            _fail(deque(durable), self.not_leader())
        else:
            lead.hold(topic, durable)

    def leader_wrote(self, topic: Topic) -> None:
        if self.leading is not None:
            self.leading.leader_wrote(topic)

    def readable_end(self, topic: Topic) -> int:
        """Fetch reads below this: what a majority holds (as far as this node knows)."""
        lead = self.leading
        if lead is not None:
            state = lead.topics.get(topic.id)
            return state.tracker.committed if state is not None else 0
        return self.follower.committed_offset(topic.id)

    async def create_topic(self, name: str, retention: dict | None) -> Topic:
        lead = self._writing()
        meta, created = await self.coordinator.create_topic(name, retention, epoch=lead.epoch)
        topic = await self.ensure_topic(meta)
        if created:
            log.info("topic %s created in cluster %s (id %d)", name, self.coordinator.cluster,
                     topic.id)
        await lead.open_topic(topic)
        return topic

    async def delete_topic(self, topic: Topic) -> int:
        lead = self._writing()
        await self.coordinator.delete_topic(topic.name, epoch=lead.epoch)
        lead.forget_topic(topic.id, error_message("UNKNOWN_TOPIC", f"{topic.id} (deleted)"))
        return await self.broker.delete_local_topic(topic)

    async def set_retention(self, topic: Topic, max_age_secs: int, max_bytes: int) -> None:
        lead = self._writing()
        await self.coordinator.set_retention(topic.name, max_age_secs, max_bytes, epoch=lead.epoch)
        await self.broker.run_admin(topic.set_retention, max_age_secs, max_bytes)

    async def new_producer_id(self) -> int:
        lead = self._writing()
        return await self.coordinator.new_producer_id(epoch=lead.epoch)

    def ready(self) -> bool:
        """Whether this node may acknowledge (leader) or is following a live stream."""
        if not self.joined or not self.coordinator.lease.valid():
            return False
        if self.leading is not None:
            return self.leading.writable
        link = self.inbound
        return (link is not None and not link.closed and
                asyncio.get_running_loop().time() - link.last_message < FOLLOWER_SILENCE_S)

    def status(self) -> dict:
        lead = self.leading
        holder = self.leader
        peers = {}
        if lead is not None:
            for node, link in lead.links.items():
                peers[str(node)] = {
                    "connected": link.connected,
                    "confirmed": {str(t): s.tracker.confirmed.get(node, 0)
                                  for t, s in lead.topics.items()}}
        registered = {n.node_id: n.addr for n in self.nodes}
        return {
            "node_id": self.node_id, "mode": "l3", "cluster": self.coordinator.cluster,
            "is_leader": lead is not None and lead.writable,
            "leader_id": holder.node_id if holder else None,
            "leader_addr": holder.addr if holder else None,
            "epoch": holder.epoch if holder else 0, "current_term": holder.epoch if holder else 0,
            "node_count": len(self.members), "healthy_nodes": len(registered),
            "quorum_available": len([m for m in self.members if m in registered])
            >= required_copies(len(self.members)),
            "nodes": [{"node_id": m, "addr": registered.get(m), "registered": m in registered}
                      for m in self.members],
            "peer_states": peers,
            "lease_valid": self.coordinator.lease.valid(),
        }
