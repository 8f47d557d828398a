"""A real three-node L3 cluster (real etcd, three `lance-net serve` processes on loopback):
acknowledged writes on every follower, identical sealed segments, reads below the commit
index only, redirects from followers, and acks that do not wait for a stopped follower."""
import hashlib
import signal
import socket
import time

import pytest

from lance_net.protocol import (Ack, ClusterStatusResponse, CreateTopic, DeleteTopic, ErrorResponse,
                                GetClusterStatus, InitProducer, ListOffsets, ListTopics,
                                OffsetsResponse, SetRetention, TopicResponse)
from lance_net.replication.testing import LocalCluster

from .conftest import RawClient
from .replication_fixtures import etcd  # noqa: F401  (fixture)

CONFIG = "[io]\nsegment_max_bytes = 65536\n[replication]\nlease_ttl_s = 3\n"
DEADLINE_S = 60


@pytest.fixture(scope="module")
def cluster(etcd, tmp_path_factory):  # noqa: F811
    with LocalCluster(tmp_path_factory.mktemp("l3"), etcd.url, cluster="l3-cluster",
                      config_toml=CONFIG) as local:
        yield local


def until(predicate, what: str, timeout: float = DEADLINE_S):
    """Poll until `predicate()` returns something true; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def client(node) -> RawClient:
    return RawClient("127.0.0.1", node.port, timeout=30)


def produce_all(conn: RawClient, topic_id: int, batches) -> None:
    """Send every batch pipelined, then read one Ack per batch."""
    for i, values in enumerate(batches, 1):
        conn.ingest(topic_id, i, values)
    for i in range(1, len(batches) + 1):
        reply = conn.recv()
        assert isinstance(reply, Ack) and reply.batch_id == i, reply


def fetched_values(node, topic_id: int) -> list[bytes]:
    with client(node) as conn:
        return [v for b in conn.fetch_all(topic_id) for v in b.records]


def readable_end(node, topic_id: int) -> int:
    with client(node) as conn:
        reply = conn.request(ListOffsets(topic_id, ListOffsets.LATEST))
    assert isinstance(reply, OffsetsResponse), reply
    return reply.offset


def sealed_hashes(node, name: str) -> dict[str, str]:
    folder = node.data_dir / "segments" / name
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("*.lnc")) if "-" in p.name}


def create_topic(leader, name: str) -> int:
    with client(leader) as conn:
        reply = conn.request(CreateTopic(name))
    assert isinstance(reply, TopicResponse), reply
    return int(reply.data["id"])


def test_acknowledged_writes_are_on_every_follower(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "orders")
    batches = [[b"order-%d-%d" % (i, j) for j in range(4)] for i in range(50)]
    with client(leader) as conn:
        produce_all(conn, topic_id, batches)
    expected = [v for batch in batches for v in batch]
    assert fetched_values(leader, topic_id) == expected
    for follower in cluster.followers(leader):
        until(lambda: fetched_values(follower, topic_id) == expected,
              f"node {follower.node_id} serving the acknowledged records")


def test_sealed_segments_are_byte_identical_on_every_node(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "sealed")
    record = b"x" * 1000
    with client(leader) as conn:
        produce_all(conn, topic_id, [[record] * 16 for _ in range(40)])   # ~640 KiB: ~9 seals
    leader_sealed = sealed_hashes(leader, "sealed")
    assert len(leader_sealed) >= 5
    for follower in cluster.followers(leader):
        until(lambda: set(leader_sealed) <= set(sealed_hashes(follower, "sealed")),
              f"node {follower.node_id} sealing the leader's segments")
        found = sealed_hashes(follower, "sealed")
        assert {k: found[k] for k in leader_sealed} == leader_sealed


def test_produce_to_a_follower_is_redirected_to_the_leader(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "redirected")
    for follower in cluster.followers(leader):
        with client(follower) as conn:
            conn.ingest(topic_id, 1, [b"not here"])
            reply = conn.recv()
            assert isinstance(reply, ErrorResponse), reply
            assert reply.message == f"NOT_LEADER: redirect to {leader.endpoint}"
            reply = conn.request(InitProducer(0, topic_id))
            assert isinstance(reply, ErrorResponse) and reply.message.startswith("NOT_LEADER"), reply
            reply = conn.request(CreateTopic("elsewhere"))
            assert isinstance(reply, ErrorResponse), reply
            assert reply.message == f"NOT_LEADER: redirect to {leader.endpoint}"
    assert fetched_values(leader, topic_id) == []


def test_the_client_follows_the_redirect(cluster):
    import asyncio

    from lance_net.client import Producer

    leader = cluster.leader()
    follower = cluster.followers(leader)[0]

    async def main():
        async with Producer(follower.endpoint, "via-follower", create_topic=True) as producer:
            for i in range(20):
                producer.send(b"r%d" % i)
            await producer.flush()
            return producer.topic_id, producer.endpoint

    topic_id, endpoint = asyncio.run(asyncio.wait_for(main(), DEADLINE_S))
    assert endpoint == leader.endpoint
    assert fetched_values(leader, topic_id) == [b"r%d" % i for i in range(20)]


def test_cluster_status_names_the_leader_and_the_members(cluster):
    leader = cluster.leader()
    for node in cluster.nodes.values():
        with client(node) as conn:
            reply = conn.request(GetClusterStatus())
        assert isinstance(reply, ClusterStatusResponse), reply
        status = reply.data
        assert status["mode"] == "l3" and status["node_id"] == node.node_id
        assert status["leader_id"] == leader.node_id
        assert status["leader_addr"] == leader.endpoint
        assert status["is_leader"] == (node is leader)
        assert [n["node_id"] for n in status["nodes"]] == [1, 2, 3]
        until(lambda: client_status(node)["healthy_nodes"] == 3, "every node registered")
        health = node.health()
        assert health["ready"] and health["leader_id"] == leader.node_id


def client_status(node) -> dict:
    with client(node) as conn:
        return conn.request(GetClusterStatus()).data


def test_nothing_is_acknowledged_or_served_without_a_majority(cluster):
    """Both followers stopped: the leader writes the batch but neither acks nor serves it;
    with one follower back, the ack comes and every running node serves it."""
    leader = cluster.leader()
    topic_id = create_topic(leader, "majority")
    first, second = cluster.followers(leader)
    with client(leader) as conn:
        produce_all(conn, topic_id, [[b"before"]])
        until(lambda: all(readable_end(n, topic_id) > 0 for n in (first, second)),
              "followers learning the commit")
        committed = readable_end(leader, topic_id)
        first.signal(signal.SIGSTOP)
        second.signal(signal.SIGSTOP)
        try:
            conn.ingest(topic_id, 2, [b"held back"])
            # The leader holds the batch on disk; nobody acknowledges or serves it.
            until(lambda: (leader.data_dir / "segments" / "majority").exists(), "topic folder")
            until(lambda: _active_size(leader, "majority") > committed, "the leader's write")
            assert readable_end(leader, topic_id) == committed
            assert fetched_values(leader, topic_id) == [b"before"]
            assert not _replied(conn)
            first.signal(signal.SIGCONT)
            reply = conn.recv(timeout=DEADLINE_S)
            assert isinstance(reply, Ack) and reply.batch_id == 2, reply
        finally:
            first.signal(signal.SIGCONT)
            second.signal(signal.SIGCONT)
    for node in (leader, first, second):
        until(lambda: fetched_values(node, topic_id) == [b"before", b"held back"],
              f"node {node.node_id} serving the committed batch")


def _active_size(node, name: str) -> int:
    folder = node.data_dir / "segments" / name
    actives = [p for p in folder.glob("*.lnc") if "-" not in p.name]
    # an active segment is preallocated: count up to its last non-zero byte
    return max((len(p.read_bytes().rstrip(b"\0")) for p in actives), default=0)


def _replied(conn: RawClient) -> bool:
    """Whether the server sent anything within a short look (it must not have)."""
    conn.sock.settimeout(0.5)
    try:
        data = conn.sock.recv(1, socket.MSG_PEEK)
    except (TimeoutError, OSError):
        return False
    return bool(data)


def test_a_stopped_follower_does_not_hold_acks_back(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "one-stopped")
    stopped, running = cluster.followers(leader)
    stopped.signal(signal.SIGSTOP)
    try:
        with client(leader) as conn:
            produce_all(conn, topic_id, [[b"v%d" % i] * 8 for i in range(200)])
        expected = [b"v%d" % i for i in range(200) for _ in range(8)]
        until(lambda: fetched_values(running, topic_id) == expected, "the running follower")
    finally:
        stopped.signal(signal.SIGCONT)
    until(lambda: fetched_values(stopped, topic_id) == expected, "the stopped follower catching up")


def topics_on(node) -> dict:
    with client(node) as conn:
        reply = conn.request(ListTopics())
    assert isinstance(reply, TopicResponse), reply
    return {t["name"]: t for t in reply.data["topics"]}


def test_topic_changes_reach_every_node_with_the_cluster_id(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "short-lived")
    for node in cluster.nodes.values():
        until(lambda: topics_on(node).get("short-lived", {}).get("id") == topic_id,
              f"node {node.node_id} creating the topic with id {topic_id}")
    with client(leader) as conn:
        reply = conn.request(SetRetention(topic_id, 3600, 1 << 30))
        assert isinstance(reply, TopicResponse), reply
    for node in cluster.nodes.values():
        until(lambda: topics_on(node)["short-lived"]["retention"] ==
              {"max_age_secs": 3600, "max_bytes": 1 << 30}, f"node {node.node_id} retention")
    with client(leader) as conn:
        reply = conn.request(DeleteTopic(topic_id))
        assert isinstance(reply, TopicResponse) and reply.data == {"deleted": topic_id}, reply
    for node in cluster.nodes.values():
        until(lambda: "short-lived" not in topics_on(node), f"node {node.node_id} deleting it")
    assert create_topic(leader, "short-lived") > topic_id    # an id is never handed out again
