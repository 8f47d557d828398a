"""Cluster membership, leader election and cluster metadata kept in etcd (L3 mode).

Owns the keys under `/<cluster>/`; it decides who leads and which ids exist, never what is
in a log (that is `follower`, `quorum` and the broker's business).

Keys:
  /<cluster>/nodes/<id>            {"node_id", "addr"}, attached to the node's lease
  /<cluster>/leader                {"node_id", "addr"}, attached to the leader's lease;
                                   its create_revision is the leader's fencing epoch
  /<cluster>/topics/<name>         the topic JSON of LWP.md (id, name, created_at, ...)
  /<cluster>/topic-ids/<id>        the name, so that an id is never handed out twice
  /<cluster>/counters/topic-id     the next topic id
  /<cluster>/counters/producer-id  the next producer id
  /<cluster>/positions/<id>        {"<topic-id>": [last_epoch, end]}: where the node's logs end,
                                   published at failover, attached to the node's lease
  /<cluster>/epochs/<topic-id>     the current leader's epochs file of the topic, published
                                   (fenced) before its first write, read by followers to
                                   cut their logs back to the leader's (`follower.reconcile`)
  /<cluster>/seed                  the cluster id (node.json) of the data directory the cluster
                                   was seeded from: logs written before the cluster existed
                                   are shared only by nodes restored from that same copy

Every id comes from a compare-and-swap on its counter, so two nodes creating at the same
moment never get the same id. Writes made on behalf of a leader can be fenced: given the
leader's epoch they only succeed while the leader key is still that same key.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import AsyncIterator, Mapping, Sequence

from .etcd import (EtcdClient, EtcdError, EtcdUnavailable, KeyValue, compare_created,
                   compare_modified, delete_op, put_op, range_op)
from .epochs import EpochEntry
from .lease import MIN_MARGIN, Lease
from .quorum import LogPosition


class NotLeaderError(EtcdError):
    """A fenced write found that the leader key is no longer the one of the given epoch."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: int
    addr: str


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    node_id: int
    addr: str
    epoch: int     # create_revision of the leader key: higher for every new leadership
    lease: int

    @classmethod
    def from_kv(cls, kv: KeyValue) -> "LeaderInfo":
        body = json.loads(kv.value)
        return cls(int(body["node_id"]), str(body["addr"]), kv.create_revision, kv.lease)


class Coordinator:
    """One node's view of the cluster: its registration, its lease, its leadership."""

    def __init__(self, client: EtcdClient, *, cluster: str, node_id: int, advertise: str,
                 ttl: int = 5, margin: float = MIN_MARGIN):
        if not cluster or "/" in cluster:
            raise ValueError(f"cluster name {cluster!r}: expected a non-empty name without '/'")
        self.client = client
        self.cluster = cluster
        self.node_id = int(node_id)
        self.advertise = advertise
        self.lease = Lease(client, ttl, margin=margin)
        self.leadership: LeaderInfo | None = None
        root = f"/{cluster}/"
        self.nodes_prefix = root + "nodes/"
        self.leader_key = root + "leader"
        self.topics_prefix = root + "topics/"
        self.topic_ids_prefix = root + "topic-ids/"
        self.topic_counter = root + "counters/topic-id"
        self.producer_counter = root + "counters/producer-id"
        self.epochs_prefix = root + "epochs/"
        self.positions_prefix = root + "positions/"
        self.seed_key = root + "seed"

    @classmethod
    def from_settings(cls, cfg: dict) -> "Coordinator":
        """A coordinator as lance.toml describes it ([node] id, the [replication] section)."""
        rep = cfg["replication"]
        return cls(EtcdClient(rep["etcd"]), cluster=rep["cluster"], node_id=int(cfg["node"]["id"]),
                   advertise=rep["advertise"], ttl=int(rep["lease_ttl_s"]),
                   margin=rep["lease_margin_ms"] / 1000)

    def _identity(self) -> bytes:
        return json.dumps({"node_id": self.node_id, "addr": self.advertise}).encode()

    # -- membership ------------------------------------------------------------------

    async def start(self) -> None:
        """Grant the lease, keep it alive, and register this node under it."""
        await self.lease.grant()
        self.lease.start()
        await self.client.put(f"{self.nodes_prefix}{self.node_id}", self._identity(), lease=self.lease.id)

    async def nodes(self) -> list[NodeInfo]:
        kvs, _ = await self.client.range(self.nodes_prefix, prefix=True)
        found = [json.loads(kv.value) for kv in kvs]
        return sorted((NodeInfo(int(n["node_id"]), str(n["addr"])) for n in found),
                      key=lambda n: n.node_id)

    # -- leadership ------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """This node's fencing epoch while it leads, else 0."""
        return self.leadership.epoch if self.leadership else 0

    def is_leader(self) -> bool:
        """True while this node won an election and its lease is certainly still valid."""
        return self.leadership is not None and self.lease.valid()

    async def campaign(self) -> LeaderInfo | None:
        """One attempt to become leader: create the leader key if nobody holds it.

        Returns this node's leadership, or None when another node leads.
        """
        if not self.lease.valid():
            return None
        result = await self.client.txn(
            [compare_created(self.leader_key, 0)],
            [put_op(self.leader_key, self._identity(), lease=self.lease.id), range_op(self.leader_key)],
            [range_op(self.leader_key)])
        kvs = result.ranges()[0]
        if not kvs:
            return None  # a transaction's range sees its own put: not reached in practice
        holder = LeaderInfo.from_kv(kvs[0])
        if holder.lease == self.lease.id and holder.node_id == self.node_id:
            self.leadership = holder
            return holder
        self.leadership = None
        return None

    async def leader(self) -> LeaderInfo | None:
        kv = await self.client.get(self.leader_key)
        return LeaderInfo.from_kv(kv) if kv else None

    async def watch_leader(self) -> AsyncIterator[LeaderInfo | None]:
        """The current leader (None when there is none), then every change of it."""
        kvs, revision = await self.client.range(self.leader_key)
        current = LeaderInfo.from_kv(kvs[0]) if kvs else None
        yield current
        async with self.client.watch(self.leader_key, start_revision=revision + 1) as watch:
            async for event in watch:
                current = None if event.type == "DELETE" else LeaderInfo.from_kv(event.kv)
                if self.leadership and (current is None or current.epoch != self.leadership.epoch):
                    self.leadership = None
                yield current

    async def elect(self) -> LeaderInfo:
        """Campaign until this node leads; between attempts, wait for the leader key to go."""
        while True:
            if self.lease.lost.is_set():
                raise NotLeaderError(self.client.endpoint, self.leader_key,
                                     f"lease {self.lease.id:x} is gone; this node cannot lead")
            if not self.lease.valid():
                await asyncio.sleep(0.1)  # renewals are failing: no campaign can succeed now
                continue
            won = await self.campaign()
            if won:
                return won
            async with contextlib.aclosing(self.watch_leader()) as changes:
                async for holder in changes:
                    if holder is None:
                        break

    async def resign(self) -> bool:
        """Give up leadership: delete the leader key if it is still this node's. True if deleted."""
        epoch, self.leadership = self.epoch, None
        if not epoch:
            return False
        result = await self.client.txn([compare_created(self.leader_key, epoch)],
                                       [delete_op(self.leader_key)])
        return result.succeeded

    def _fence(self, epoch: int | None) -> list[dict]:
        return [] if epoch is None else [compare_created(self.leader_key, epoch)]

    async def _check_fence(self, epoch: int | None, key: str) -> None:
        if epoch is None:
            return
        holder = await self.leader()
        if holder is None or holder.epoch != epoch:
            found = "no leader" if holder is None else f"epoch {holder.epoch} (node {holder.node_id})"
            raise NotLeaderError(self.client.endpoint + "/v3/kv/txn", key,
                                 f"fenced: expected leader epoch {epoch}, found {found}")

    # -- ids -------------------------------------------------------------------------

    async def new_producer_id(self, *, epoch: int | None = None) -> int:
        """A producer id never handed out before in this cluster."""
        counter = self.producer_counter
        while True:
            kv = await self.client.get(counter)
            value = int(kv.value) if kv else 1
            # Compare-and-swap: a concurrent taker moves mod_revision and this one retries.
            guard = compare_modified(counter, kv.mod_revision) if kv else compare_created(counter, 0)
            result = await self.client.txn([guard] + self._fence(epoch),
                                           [put_op(counter, str(value + 1))], key=counter)
            if result.succeeded:
                return value
            await self._check_fence(epoch, counter)

    async def reserve_ids(self, *, next_topic_id: int, next_producer_id: int,
                          epoch: int | None = None) -> None:
        """Move the id counters to at least these values: ids a seeded data directory
        already used are never handed out again."""
        for counter, at_least in ((self.topic_counter, next_topic_id),
                                  (self.producer_counter, next_producer_id)):
            while True:
                kv = await self.client.get(counter)
                if kv is not None and int(kv.value) >= at_least:
                    break
                guard = compare_modified(counter, kv.mod_revision) if kv else compare_created(counter, 0)
                result = await self.client.txn([guard] + self._fence(epoch),
                                               [put_op(counter, str(at_least))], key=counter)
                if result.succeeded:
                    break
                await self._check_fence(epoch, counter)

    # -- failover positions --------------------------------------------------------

    async def publish_positions(self, positions: Mapping[int, LogPosition]) -> None:
        """Publish where this node's log of each topic ends, attached to its lease.

        Done after the node saw the leader key go (and closed the old leader's streams), so
        the positions include every batch the old leader acknowledged.
        """
        body = json.dumps({str(t): [p.last_epoch, p.end_offset] for t, p in positions.items()})
        await self.client.put(f"{self.positions_prefix}{self.node_id}", body, lease=self.lease.id)

    async def positions(self) -> dict[int, dict[int, LogPosition]]:
        """Every published position: node id -> topic id -> LogPosition."""
        kvs, _ = await self.client.range(self.positions_prefix, prefix=True)
        out = {}
        for kv in kvs:
            node = int(kv.key.decode().rsplit("/", 1)[1])
            out[node] = {int(t): LogPosition(int(e), int(o)) for t, (e, o) in json.loads(kv.value).items()}
        return out

    # -- epochs ----------------------------------------------------------------------

    async def publish_epochs(self, topic_id: int, entries: Sequence[EpochEntry], *, epoch: int) -> None:
        """Publish this leader's epochs file of a topic (its own entry last), fenced by `epoch`."""
        if not entries or entries[-1].epoch != epoch:
            raise ValueError(f"epochs of topic {topic_id}: expected the last entry to be epoch "
                             f"{epoch}, found {entries[-1] if entries else 'none'}")
        key = f"{self.epochs_prefix}{topic_id}"
        body = json.dumps([[e.epoch, e.start_offset] for e in entries])
        result = await self.client.txn(self._fence(epoch), [put_op(key, body)], key=key)
        if not result.succeeded:
            await self._check_fence(epoch, key)
            raise NotLeaderError(self.client.endpoint, key, f"fenced: leader epoch {epoch} is gone")

    async def leader_epochs(self, topic_id: int) -> list[EpochEntry]:
        """The epochs file the topic's latest leader published ([] if none did)."""
        kv = await self.client.get(f"{self.epochs_prefix}{topic_id}")
        return [EpochEntry(int(e), int(s)) for e, s in json.loads(kv.value)] if kv else []

    # -- topics ----------------------------------------------------------------------

    async def create_topic(self, name: str, retention: dict | None = None, *,
                           epoch: int | None = None) -> tuple[dict, bool]:
        """The topic named `name`, created with a new cluster-wide id if absent.

        Returns (topic JSON, created). With `epoch`, only while that leader still leads.
        """
        key = self.topics_prefix + name
        retention = {"max_age_secs": int((retention or {}).get("max_age_secs", 0)),
                     "max_bytes": int((retention or {}).get("max_bytes", 0))}
        while True:
            counter = await self.client.get(self.topic_counter)
            topic_id = int(counter.value) if counter else 1
            guard = (compare_modified(self.topic_counter, counter.mod_revision) if counter
                     else compare_created(self.topic_counter, 0))
            meta = {"id": topic_id, "name": name, "created_at": int(time.time()),
                    "topic_epoch": 1, "retention": retention}
            result = await self.client.txn(
                [guard, compare_created(key, 0)] + self._fence(epoch),
                [put_op(self.topic_counter, str(topic_id + 1)), put_op(key, json.dumps(meta)),
                 put_op(f"{self.topic_ids_prefix}{topic_id}", name)],
                [range_op(key)], key=key)
            if result.succeeded:
                return meta, True
            await self._check_fence(epoch, key)
            existing = result.ranges()[0]
            if existing:
                return json.loads(existing[0].value), False

    async def register_topic(self, meta: dict, *, epoch: int | None = None) -> tuple[dict, bool]:
        """A topic that already exists on disk (a seeded copy), added with its own id.

        Returns (topic JSON, registered); an existing name is left as it is. Raises EtcdError
        when another topic holds the id. The counter moves past the id in the same step.
        """
        name, topic_id = meta["name"], int(meta["id"])
        key, id_key = self.topics_prefix + name, f"{self.topic_ids_prefix}{topic_id}"
        while True:
            counter = await self.client.get(self.topic_counter)
            value = max(int(counter.value) if counter else 1, topic_id + 1)
            guard = (compare_modified(self.topic_counter, counter.mod_revision) if counter
                     else compare_created(self.topic_counter, 0))
            result = await self.client.txn(
                [guard, compare_created(key, 0), compare_created(id_key, 0)] + self._fence(epoch),
                [put_op(self.topic_counter, str(value)), put_op(key, json.dumps(meta)),
                 put_op(id_key, name)],
                [range_op(key), range_op(id_key)], key=key)
            if result.succeeded:
                return meta, True
            await self._check_fence(epoch, key)
            existing, holder = result.ranges()
            if existing:
                return json.loads(existing[0].value), False
            if holder:
                raise EtcdError(self.client.endpoint, id_key,
                                f"topic {name!r}: expected id {topic_id} free, found it taken by "
                                f"topic {holder[0].value.decode()!r}")

    async def claim_seed(self, cluster_id: str, *, epoch: int | None = None) -> str:
        """Record `cluster_id` as the copy this cluster was seeded from, unless one already
        is; returns the recorded one."""
        result = await self.client.txn([compare_created(self.seed_key, 0)] + self._fence(epoch),
                                       [put_op(self.seed_key, cluster_id)],
                                       [range_op(self.seed_key)], key=self.seed_key)
        if result.succeeded:
            return cluster_id
        await self._check_fence(epoch, self.seed_key)
        return result.ranges()[0][0].value.decode()

    async def seed(self) -> str | None:
        """The cluster id of the copy this cluster was seeded from (None: not seeded)."""
        kv = await self.client.get(self.seed_key)
        return kv.value.decode() if kv else None

    async def topic(self, name: str) -> dict | None:
        kv = await self.client.get(self.topics_prefix + name)
        return json.loads(kv.value) if kv else None

    async def topics(self) -> list[dict]:
        kvs, _ = await self.client.range(self.topics_prefix, prefix=True)
        return sorted((json.loads(kv.value) for kv in kvs), key=lambda t: t["id"])

    async def set_retention(self, name: str, max_age_secs: int = 0, max_bytes: int = 0, *,
                            epoch: int | None = None) -> dict:
        key = self.topics_prefix + name
        while True:
            kv = await self.client.get(key)
            if kv is None:
                raise EtcdError(self.client.endpoint, key, "UNKNOWN_TOPIC: no such topic")
            meta = json.loads(kv.value)
            meta["retention"] = {"max_age_secs": int(max_age_secs), "max_bytes": int(max_bytes)}
            result = await self.client.txn([compare_modified(key, kv.mod_revision)] + self._fence(epoch),
                                           [put_op(key, json.dumps(meta))])
            if result.succeeded:
                return meta
            await self._check_fence(epoch, key)

    async def delete_topic(self, name: str, *, epoch: int | None = None) -> int | None:
        """Delete the topic's metadata; returns its id, or None if there was no such topic.

        The id stays taken (`topic-ids/<id>` is kept) so it is never reused.
        """
        key = self.topics_prefix + name
        while True:
            kv = await self.client.get(key)
            if kv is None:
                return None
            result = await self.client.txn([compare_modified(key, kv.mod_revision)] + self._fence(epoch),
                                           [delete_op(key)])
            if result.succeeded:
                return int(json.loads(kv.value)["id"])
            await self._check_fence(epoch, key)

    # -- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Resign if leading, then revoke the lease (which removes the node's registration)."""
        try:
            if self.leadership:
                await self.resign()
            await self.lease.revoke()
        except EtcdUnavailable:
            await self.lease.stop()  # the lease expires on its own
