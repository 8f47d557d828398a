"""Starting a node in L3 mode: its settings are checked, its LWP port opens before it joins,
and until a leader is known it answers writes with NOT_LEADER and is not ready."""
import socket
import subprocess

import pytest

from lance_net.protocol import CreateTopic, ErrorResponse, GetClusterStatus, Ingest
from lance_net.replication.testing import ClusterNode, LocalCluster, free_port
from lance_store.records import encode

from .conftest import RawClient, lance_net_command
from .replication_fixtures import etcd  # noqa: F401  (fixture)
from .test_l3_cluster import until


def test_a_node_that_cannot_reach_etcd_listens_but_takes_no_write(tmp_path):
    dead_etcd = f"http://127.0.0.1:{free_port()}"
    node = ClusterNode(tmp_path, 1, [1, 2, 3], dead_etcd, "nowhere").start()
    try:
        until(lambda: "lwp: listening" in node.log(), "the LWP port opening")
        with RawClient("127.0.0.1", node.port) as conn:
            payload, count = encode([b"early"])
            conn.send(Ingest(1, 1, count, payload))
            reply = conn.recv()
            assert isinstance(reply, ErrorResponse), reply
            assert reply.message == "NOT_LEADER: leader unknown"
            reply = conn.request(CreateTopic("early"))
            assert isinstance(reply, ErrorResponse) and reply.message == "NOT_LEADER: leader unknown"
            status = conn.request(GetClusterStatus()).data
            assert status["mode"] == "l3" and status["leader_id"] is None
            assert not status["is_leader"]
        health = node.health()
        assert not health["ready"] and health["status"] == "joining"
        until(lambda: "joining cluster nowhere" in node.log(), "the failed join being logged")
        assert node.running
    finally:
        node.kill()


def serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*lance_net_command(), "serve", "--data-dir", str(tmp_path / "data"),
                           "--http", "off", "--listen", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_l3_settings_are_checked_before_anything_starts(tmp_path):
    done = serve(tmp_path, "--replication-mode", "l3", "--node-id", "4", "--members", "1,2,3")
    assert done.returncode == 2
    assert "replication.members: expected this node's id 4 among them, found [1, 2, 3]" in done.stderr
    done = serve(tmp_path, "--replication-mode", "l3", "--members", "1,x")
    assert done.returncode == 2 and "--members" in done.stderr
    (tmp_path / "lance.toml").write_text('[replication]\nmode = "l3"\nmembers = [1, 2, 3]\n'
                                         'lease_ttl_s = 1\nlease_margin_ms = 1000\n')
    done = serve(tmp_path, "--config", str(tmp_path / "lance.toml"))
    assert done.returncode == 2
    assert "replication.lease_ttl_s: expected more than the margin (1000 ms), found 1 s" in done.stderr
    (tmp_path / "tls.toml").write_text('[replication]\nmode = "l3"\nmembers = [1]\n'
                                       '[tls]\ncert = "c.pem"\nkey = "k.pem"\n')
    done = serve(tmp_path, "--config", str(tmp_path / "tls.toml"))
    assert done.returncode == 2 and "do not speak TLS yet" in done.stderr
    assert not (tmp_path / "data").exists()


def test_a_cluster_with_a_node_that_cannot_start_is_not_taken_for_ready(tmp_path, etcd):
    """Two of three nodes can elect a leader; LocalCluster.start must still fail, naming the
    node that died (here its LWP port is taken) and showing its log."""
    cluster = LocalCluster(tmp_path, etcd.url, cluster="one-node-short")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", cluster.nodes[1].port))
    squatter.listen()
    try:
        with pytest.raises(RuntimeError, match="node 1 exited") as failed:
            cluster.start(timeout=60)
        assert "address already in use" in str(failed.value)
    finally:
        squatter.close()
        cluster.close()


def test_free_ports_are_never_handed_out_twice():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
