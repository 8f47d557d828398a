"""Failures of a real three-node L3 cluster: the leader SIGKILLed under load (no acknowledged
record lost or duplicated, and the restarted node resyncs to identical segments), a stale
leader that cannot get a write acknowledged, and a graceful handover on SIGTERM."""
import signal

import pytest

from lance_net.protocol import Ack, CreateTopic, ErrorResponse, TopicResponse
from lance_net.replication.testing import ClusterProducer, LocalCluster

from .conftest import RawClient
from .replication_fixtures import etcd  # noqa: F401  (fixture)
from .test_l3_cluster import DEADLINE_S, fetched_values, sealed_hashes, until

CONFIG = "[io]\nsegment_max_bytes = 262144\n[replication]\nlease_ttl_s = 3\n"


@pytest.fixture
def cluster(etcd, tmp_path, request):  # noqa: F811
    with LocalCluster(tmp_path, etcd.url, cluster=request.node.name[:40],
                      config_toml=CONFIG) as local:
        yield local


def create_topic(node, name: str) -> int:
    with RawClient("127.0.0.1", node.port, timeout=30) as conn:
        reply = conn.request(CreateTopic(name))
    assert isinstance(reply, TopicResponse), reply
    return int(reply.data["id"])


def check_log(node, topic_id: int, acked: list[int]) -> None:
    """Every acknowledged sequence once, in order, and nothing twice."""
    values = fetched_values(node, topic_id)
    seqs = [ClusterProducer.sequence_of(v) for v in values]
    assert len(seqs) == len(set(seqs)), "a batch was written twice"
    assert seqs == sorted(seqs)
    missing = set(acked) - set(seqs)
    assert not missing, f"acknowledged and lost: {sorted(missing)[:10]}"


def test_killing_the_leader_under_load_loses_and_duplicates_nothing(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "failover")
    producer = ClusterProducer([n.endpoint for n in cluster.nodes.values()], topic_id).start()
    until(lambda: len(producer.acked) >= 3000 or producer.error, "acks before the kill")
    before = len(producer.acked)
    leader.kill()
    until(lambda: len(producer.acked) >= before + 500 or producer.error,
          "acks from a new leader")
    producer.finish(DEADLINE_S)
    successor = cluster.leader(exclude=(leader.node_id,))
    assert {endpoint for _, _, endpoint in producer.acks[before:]} <= \
        {leader.endpoint, successor.endpoint}
    assert producer.acks[-1][2] == successor.endpoint
    for node in cluster.followers(leader):
        until(lambda: len(fetched_values(node, topic_id)) >= len(producer.acked),
              f"node {node.node_id} holding every acknowledged batch")
        check_log(node, topic_id, producer.acked)

    # The killed node comes back, cuts what it alone held, and follows.
    leader.start()
    cluster.wait_ready(DEADLINE_S)
    until(lambda: fetched_values(leader, topic_id) == fetched_values(successor, topic_id),
          "the restarted node serving the leader's log")
    check_log(leader, topic_id, producer.acked)
    expected = sealed_hashes(successor, "failover")
    assert expected, "the topic sealed no segment"
    until(lambda: set(expected) <= set(sealed_hashes(leader, "failover")),
          "the restarted node sealing the leader's segments")
    found = sealed_hashes(leader, "failover")
    assert {k: found[k] for k in expected} == expected


def test_a_stale_leader_cannot_get_a_write_acknowledged(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "stale")
    conn = RawClient("127.0.0.1", leader.port, timeout=DEADLINE_S)
    conn.produce(topic_id, 1, [b"fresh"])
    leader.signal(signal.SIGSTOP)
    try:
        conn.ingest(topic_id, 2, [b"from the past"])   # waits in the socket while frozen
        successor = cluster.leader(exclude=(leader.node_id,))
    finally:
        leader.signal(signal.SIGCONT)
    reply = conn.recv()
    assert isinstance(reply, ErrorResponse), reply
    assert reply.message.startswith(("NOT_LEADER", "QUORUM_NOT_REACHED")), reply
    conn.close()
    until(lambda: leader.health().get("leader_id") == successor.node_id, "the old leader following")
    for node in cluster.nodes.values():
        until(lambda: b"fresh" in fetched_values(node, topic_id), f"node {node.node_id} caught up")
        assert b"from the past" not in fetched_values(node, topic_id)


def test_sigterm_hands_leadership_over(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "handover")
    with RawClient("127.0.0.1", leader.port, timeout=30) as conn:
        for i in range(1, 21):
            assert isinstance(conn.produce(topic_id, i, [b"h%d" % i]), Ack)
    assert leader.stop() == 0
    successor = cluster.leader(exclude=(leader.node_id,))
    until(lambda: fetched_values(successor, topic_id) == [b"h%d" % i for i in range(1, 21)],
          "the successor serving every acknowledged record")
    assert "resign" in leader.log() or "no longer leading" in leader.log()
