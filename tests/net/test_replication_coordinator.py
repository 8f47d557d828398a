"""Membership, election, fencing epochs and cluster-wide ids, with several coordinators on a real etcd."""
import asyncio
import copy

import pytest

from lance_store import settings
from lance_net.replication.coordinator import Coordinator, NotLeaderError
from lance_net.replication.epochs import EpochEntry
from lance_net.replication.etcd import EtcdClient
from lance_net.replication.quorum import LogPosition, behind_on

from .replication_fixtures import etcd, run  # noqa: F401  (fixture)


async def started(url, cluster, node_id, ttl=2):
    c = Coordinator(EtcdClient(url, timeout=2), cluster=cluster, node_id=node_id,
                    advertise=f"127.0.0.1:{1990 + node_id}", ttl=ttl)
    await c.start()
    return c


async def close_all(*coordinators):
    for c in coordinators:
        await c.close()
        await c.client.close()


def test_one_leader_and_a_higher_epoch_after_resignation(etcd):
    async def main():
        a, b = await started(etcd.url, "elect", 1), await started(etcd.url, "elect", 2)
        assert [n.node_id for n in await a.nodes()] == [1, 2]
        first = await a.campaign()
        assert first is not None and first.node_id == 1 and a.is_leader()
        assert await b.campaign() is None and not b.is_leader() and b.epoch == 0
        assert await b.leader() == first
        waiting = asyncio.create_task(b.elect())
        await asyncio.sleep(0.3)
        assert not waiting.done()                     # b waits while a leads
        assert await a.resign() and not a.is_leader()
        second = await asyncio.wait_for(waiting, 10)
        assert second.node_id == 2 and second.epoch > first.epoch and b.is_leader()
        assert await a.campaign() is None
        assert await a.resign() is False              # nothing of a's left to delete
        assert (await a.leader()).node_id == 2
        await close_all(a, b)
    run(main())


def test_leadership_moves_when_the_leaders_lease_expires(etcd):
    async def main():
        a, b = await started(etcd.url, "expire", 1), await started(etcd.url, "expire", 2)
        observer = Coordinator(EtcdClient(etcd.url), cluster="expire", node_id=9, advertise="-")
        seen = []

        async def watch():
            async for leader in observer.watch_leader():
                seen.append(None if leader is None else leader.node_id)
                if seen[-1] == 2:
                    return
        watcher = asyncio.create_task(watch())
        first = await a.elect()
        await a.lease.stop()                          # a stops renewing, as if it hung
        second = await asyncio.wait_for(b.elect(), 10)
        assert second.epoch > first.epoch
        assert not a.is_leader()                      # its lease ran out locally before etcd's did
        with pytest.raises(NotLeaderError, match=f"expected leader epoch {first.epoch}"):
            await a.create_topic("fenced", epoch=first.epoch)
        assert await a.topic("fenced") is None
        await asyncio.wait_for(watcher, 10)
        assert seen[0] in (None, 1) and seen[-2:] == [None, 2] and 1 in seen
        assert await a.resign() is False and (await b.leader()).node_id == 2
        assert [n.node_id for n in await b.nodes()] == [2]   # a's registration went with its lease
        await close_all(b)
        await a.client.close()
        await observer.client.close()
    run(main())


def test_ids_are_unique_under_concurrent_transactions(etcd):
    async def main():
        nodes = [await started(etcd.url, "ids", i) for i in (1, 2, 3)]
        producer_ids = await asyncio.gather(*[n.new_producer_id() for n in nodes for _ in range(12)])
        assert sorted(producer_ids) == list(range(1, 37))
        names = [f"t{i}" for i in range(6)]
        made = await asyncio.gather(*[n.create_topic(name) for n in nodes for name in names])
        by_name = {}
        for meta, created in made:
            by_name.setdefault(meta["name"], []).append((meta["id"], created))
        for name, got in by_name.items():
            assert len({i for i, _ in got}) == 1, name        # one id per name
            assert sum(created for _, created in got) == 1, name   # created exactly once
        ids = sorted(got[0][0] for got in by_name.values())
        assert ids == list(range(1, 7))
        assert [t["name"] for t in await nodes[0].topics()] == sorted(names, key=lambda n: by_name[n][0][0])
        await close_all(*nodes)
    run(main())


def test_topic_metadata_and_ids_never_reused(etcd):
    async def main():
        a = await started(etcd.url, "meta", 1)
        leader = await a.elect()
        meta, created = await a.create_topic("orders", {"max_age_secs": 60}, epoch=leader.epoch)
        assert created and meta["retention"] == {"max_age_secs": 60, "max_bytes": 0}
        assert set(meta) == {"id", "name", "created_at", "topic_epoch", "retention"}
        assert (await a.set_retention("orders", 0, 1 << 20, epoch=leader.epoch))["retention"]["max_bytes"] == 1 << 20
        assert (await a.topic("orders"))["retention"] == {"max_age_secs": 0, "max_bytes": 1 << 20}
        assert await a.delete_topic("orders", epoch=leader.epoch) == meta["id"]
        assert await a.delete_topic("orders") is None
        again, created = await a.create_topic("orders")
        assert created and again["id"] > meta["id"]
        with pytest.raises(NotLeaderError):
            await a.set_retention("orders", 1, 1, epoch=leader.epoch + 1000)
        await close_all(a)
    run(main())


def test_the_leaders_epochs_file_is_published_fenced(etcd):
    async def main():
        a, b = await started(etcd.url, "epochs", 1), await started(etcd.url, "epochs", 2)
        first = await a.elect()
        entries = [EpochEntry(first.epoch, 0)]
        await a.publish_epochs(7, entries, epoch=first.epoch)
        assert await b.leader_epochs(7) == entries and await b.leader_epochs(8) == []
        with pytest.raises(ValueError, match="last entry"):
            await a.publish_epochs(7, [EpochEntry(1, 0)], epoch=first.epoch)
        await a.resign()
        second = await b.elect()
        with pytest.raises(NotLeaderError):
            await a.publish_epochs(7, entries, epoch=first.epoch)      # a stale leader is fenced
        mine = entries + [EpochEntry(second.epoch, 4096)]
        await b.publish_epochs(7, mine, epoch=second.epoch)
        assert await a.leader_epochs(7) == mine
        await close_all(a, b)
    run(main())


def test_settings_describe_a_coordinator(etcd):
    cfg = copy.deepcopy(settings.DEFAULTS)
    cfg["node"]["id"] = 4
    cfg["replication"].update(etcd=[etcd.url], cluster="conf", advertise="10.0.0.4:1992",
                              lease_ttl_s=3, lease_margin_ms=700)

    async def main():
        c = Coordinator.from_settings(cfg)
        assert (c.node_id, c.lease.requested_ttl, c.lease.margin, c.client.endpoint) == (4, 3, 0.7, etcd.url)
        await c.start()
        assert [(n.node_id, n.addr) for n in await c.nodes()] == [(4, "10.0.0.4:1992")]
        await close_all(c)
    run(main())
    cfg["replication"]["lease_margin_ms"] = 100
    with pytest.raises(ValueError, match="margin"):
        Coordinator.from_settings(cfg)


def test_failover_positions_decide_whether_the_winner_may_write(etcd):
    async def main():
        nodes = [await started(etcd.url, "failover", i) for i in (1, 2, 3)]
        mine = {1: LogPosition(4, 500), 2: LogPosition(4, 70)}
        await nodes[0].publish_positions(mine)
        await nodes[1].publish_positions({1: LogPosition(4, 400), 2: LogPosition(4, 90)})
        seen = await nodes[0].positions()
        assert seen[1] == mine and set(seen) == {1, 2}
        others = {n: p for n, p in seen.items() if n != 1}
        assert behind_on(mine, others, 3) == [2]       # node 2 holds more of topic 2
        await nodes[1].close()                           # its positions go with its lease
        assert set(await nodes[0].positions()) == {1}
        await close_all(nodes[0], nodes[2])
        await nodes[1].client.close()
    run(main())
