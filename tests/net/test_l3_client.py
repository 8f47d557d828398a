"""The public client against a real three-node L3 cluster, given every node as a seed: the
Producer rides out a SIGKILLed leader (finding the new one by itself, resending what was not
acknowledged, idempotently), and the Consumer reads every acknowledged record exactly once."""
import asyncio

import pytest

from lance_net.client import Consumer, Producer
from lance_net.replication.testing import LocalCluster

from .replication_fixtures import etcd  # noqa: F401  (fixture)
from .test_l3_cluster import DEADLINE_S, create_topic, until

CONFIG = "[io]\nsegment_max_bytes = 262144\n[replication]\nlease_ttl_s = 3\n"


@pytest.fixture
def cluster(etcd, tmp_path):  # noqa: F811
    with LocalCluster(tmp_path, etcd.url, cluster="l3-client", config_toml=CONFIG) as local:
        yield local


def value(i: int) -> bytes:
    return b"rec-%08d" % i


def test_a_producer_with_every_node_as_seed_survives_the_leader_dying(cluster):
    leader = cluster.leader()
    create_topic(leader, "seeded")
    # The old leader last: the producer starts on a follower and follows its redirect.
    seeds = ",".join(n.endpoint for n in cluster.followers(leader)) + "," + leader.endpoint

    async def produce() -> None:
        async with Producer(seeds, "seeded", batch_bytes=2048, linger_ms=1,
                            delivery_timeout_s=DEADLINE_S) as producer:
            pending = []
            for i in range(6000):
                if i == 2000:
                    # Everything sent so far is acknowledged; then the leader dies under load.
                    await asyncio.gather(*[d.acked() for d in pending])
                    pending = []
                    leader.kill()
                pending.append(producer.send(value(i)))
                if len(pending) >= 500:
                    await asyncio.gather(*[d.acked() for d in pending])
                    pending = []
            await producer.flush()
            await asyncio.gather(*[d.acked() for d in pending])

    asyncio.run(asyncio.wait_for(produce(), DEADLINE_S * 2))
    successor = cluster.leader(exclude=(leader.node_id,))
    assert successor.node_id != leader.node_id

    async def consume() -> list[bytes]:
        got: list[bytes] = []
        async with Consumer(seeds, "seeded", start_from="earliest") as consumer:
            while len(got) < 6000:
                batch = await consumer.poll(timeout=DEADLINE_S)
                assert batch, f"no records after {len(got)}"
                got += [r.value for r in batch]
            assert await consumer.poll(timeout=0.5) == []
        return got

    got = asyncio.run(asyncio.wait_for(consume(), DEADLINE_S * 2))
    assert got == [value(i) for i in range(6000)]          # every record, once, in order
    until(lambda: cluster.leader(exclude=(leader.node_id,)) is not None, "a leader")
