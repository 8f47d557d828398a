"""Failures of a real three-node L3 cluster: the leader SIGKILLed under load (no acknowledged
record lost or duplicated, and the restarted node resyncs to identical segments), a stale
leader that cannot get a write acknowledged, and a graceful handover on SIGTERM."""
import collections
import signal
import threading
import time

import pytest

from lance_net.protocol import (Ack, ConnectionClosed, CreateTopic, ErrorResponse, InitProducer,
                                ProducerResponse, TopicResponse)
from lance_net.replication.testing import LocalCluster

from .conftest import RawClient
from .replication_fixtures import etcd  # noqa: F401  (fixture)
from .test_l3_cluster import DEADLINE_S, fetched_values, sealed_hashes, until

CONFIG = "[io]\nsegment_max_bytes = 262144\n[replication]\nlease_ttl_s = 3\n"


@pytest.fixture
def cluster(etcd, tmp_path, request):  # noqa: F811
    with LocalCluster(tmp_path, etcd.url, cluster=request.node.name[:40],
                      config_toml=CONFIG) as local:
        yield local


class FailoverProducer:
    """An idempotent producer that outlives its leader: on a lost connection or a refusal it
    finds the leader (following redirects, else trying every node), binds its producer id
    again and resends every unacknowledged batch with the same sequence number."""

    WINDOW = 16

    def __init__(self, cluster: LocalCluster, topic_id: int):
        self.cluster = cluster
        self.topic_id = topic_id
        self.producer_id = 0
        self.acked: list[int] = []
        self.ack_times: list[float] = []
        self.inflight: collections.deque[int] = collections.deque()
        self.next_seq = 1
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._hint: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def value(seq: int) -> bytes:
        return b"seq-%08d" % seq

    def start(self) -> "FailoverProducer":
        self._thread.start()
        return self

    def finish(self, timeout: float = DEADLINE_S) -> None:
        """Stop taking new sequences; return once every sent one is acknowledged."""
        self.stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error

    def _connect(self) -> RawClient:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            endpoints = ([self._hint] if self._hint else []) + \
                [n.endpoint for n in self.cluster.nodes.values()]
            self._hint = None
            for endpoint in endpoints:
                host, port = endpoint.rsplit(":", 1)
                try:
                    conn = RawClient(host, int(port), timeout=10)
                    reply = conn.request(InitProducer(self.producer_id, self.topic_id))
                except OSError:
                    continue
                if isinstance(reply, ProducerResponse):
                    self.producer_id = reply.producer_id
                    return conn
                conn.close()
                if isinstance(reply, ErrorResponse) and "redirect to " in reply.message:
                    self._hint = reply.message.rsplit(" ", 1)[1]
                    break
            time.sleep(0.05)
        raise AssertionError("no leader took the producer")

    def _run(self) -> None:
        try:
            conn = self._connect()
            while True:
                try:
                    for seq in self.inflight:          # resent after a reconnect
                        conn.ingest(self.topic_id, seq, [self.value(seq)])
                    while self.inflight or not self.stop.is_set():
                        while len(self.inflight) < self.WINDOW and not self.stop.is_set():
                            seq = self.next_seq
                            self.next_seq += 1
                            self.inflight.append(seq)
                            conn.ingest(self.topic_id, seq, [self.value(seq)])
                        reply = conn.recv(timeout=10)
                        if isinstance(reply, Ack) and reply.batch_id == self.inflight[0]:
                            self.acked.append(self.inflight.popleft())
                            self.ack_times.append(time.monotonic())
                            continue
                        if isinstance(reply, ErrorResponse) and "redirect to " in reply.message:
                            self._hint = reply.message.rsplit(" ", 1)[1]
                        if isinstance(reply, (ErrorResponse, ConnectionClosed)):
                            raise ConnectionError(str(reply))
                        raise AssertionError(f"unexpected reply {reply} with {list(self.inflight)[:3]} "
                                             "in flight")
                    conn.close()
                    return
                except (OSError, ConnectionError):
                    conn.close()
                    conn = self._connect()
        except BaseException as exc:  # reported by finish()
            self.error = exc


def create_topic(node, name: str) -> int:
    with RawClient("127.0.0.1", node.port, timeout=30) as conn:
        reply = conn.request(CreateTopic(name))
    assert isinstance(reply, TopicResponse), reply
    return int(reply.data["id"])


def check_log(node, topic_id: int, acked: list[int]) -> None:
    """Every acknowledged sequence once, in order, and nothing twice."""
    values = fetched_values(node, topic_id)
    seqs = [int(v.split(b"-")[1]) for v in values]
    assert len(seqs) == len(set(seqs)), "a batch was written twice"
    assert seqs == sorted(seqs)
    missing = set(acked) - set(seqs)
    assert not missing, f"acknowledged and lost: {sorted(missing)[:10]}"


def test_killing_the_leader_under_load_loses_and_duplicates_nothing(cluster):
    leader = cluster.leader()
    topic_id = create_topic(leader, "failover")
    producer = FailoverProducer(cluster, topic_id).start()
    until(lambda: len(producer.acked) >= 3000 or producer.error, "acks before the kill")
    before = len(producer.acked)
    leader.kill()
    until(lambda: len(producer.acked) >= before + 500 or producer.error,
          "acks from a new leader")
    producer.finish()
    successor = cluster.leader(exclude=(leader.node_id,))
    assert successor is not leader
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
