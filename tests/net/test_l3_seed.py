"""Seeding a new L3 cluster from one DR copy: a standalone data directory is shipped with
`lance-dr ship`, restored with `lance-dr restore` into three node directories, and the
three `lance-net serve` processes on a new etcd serve it without sending sealed segments."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lance_store
from lance_net.protocol import Ack, CreateTopic, InitProducer, ProducerResponse, TopicResponse
from lance_net.replication.testing import EtcdServer, LocalCluster

from .conftest import batches_of
from .test_l3_cluster import DEADLINE_S, client, sealed_hashes, until

CONFIG = "[io]\nsegment_max_bytes = 65536\n[replication]\nlease_ttl_s = 3\n"
SOURCE_SEGMENT_BYTES = 16 << 10
PRODUCERS_BEFORE = 5


def lance_dr(*args) -> str:
    script = Path(sys.executable).with_name("lance-dr")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "lance_dr.cli"]
    env = {k: v for k, v in os.environ.items() if k != "LANCE_CONFIG"}
    done = subprocess.run([*base, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, f"lance-dr {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
    return done.stdout


def batch_list(data: bytes) -> list[tuple[int, list[bytes]]]:
    return [(b.offset, b.records) for b in batches_of(data)]


def write_source(path: Path, tag: bytes) -> dict[str, int]:
    """A standalone data directory: two topics with sealed segments and a non-empty active
    one, and producer ids already handed out. Returns topic name -> id."""
    config = lance_store.StoreConfig(segment_max_bytes=SOURCE_SEGMENT_BYTES)
    with lance_store.open(path, create=True, node_id=7, config=config) as store:
        ids = {}
        for name, batches in (("orders", 60), ("clicks", 40)):
            topic = store.create_topic(name)
            values = [[b"%s-%s-%d-%d-" % (tag, name.encode(), i, j) + b"v" * 200 for j in range(4)]
                      for i in range(batches)]
            for k in range(0, batches, 5):   # one write per group: several seals in all
                topic.append_many(values[k:k + 5])
            topic.append([b"%s-tail" % name.encode()])   # the active segment is not empty
            ids[name] = topic.id
        for _ in range(PRODUCERS_BEFORE):
            store.new_producer_id()
    return ids


def source_batches(path: Path) -> dict[str, list]:
    out = {}
    with lance_store.open(path, readonly=True) as store:
        for topic in store.topics():
            data, offset = b"", topic.low_watermark
            while offset < topic.high_watermark:
                chunk, offset, _ = topic.read_raw(offset)
                data += chunk
            out[topic.name] = batch_list(data)
            assert len(topic.segments) >= 3, f"{topic.name}: expected sealed segments"
            assert topic.active.size > 0
    return out


def fetched_batches(node, topic_id: int) -> list:
    with client(node) as conn:
        return [(b.offset, b.records) for b in conn.fetch_all(topic_id)]


def file_identities(node, names) -> dict:
    """Inode and modification time of each sealed segment: a rewrite or a new copy changes them."""
    out = {}
    for name in names:
        for path in sorted((node.data_dir / "segments" / name).glob("*.lnc")):
            if "-" in path.name:
                st = path.stat()
                out[f"{name}/{path.name}"] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def shipped_copy(tmp_path: Path, name: str):
    """A standalone data directory shipped to a local folder: (copy, topic ids, batches)."""
    source = tmp_path / f"{name}-source"
    ids = write_source(source, name.encode())
    expected = source_batches(source)
    copy = tmp_path / name
    lance_dr("ship", "--data-dir", source, "--to", copy)
    return copy, ids, expected


@pytest.fixture
def new_etcd():
    with EtcdServer() as etcd:
        yield etcd


@pytest.fixture
def nodes(tmp_path, new_etcd):
    """Three L3 nodes on a new etcd, not started; killed after the test."""
    cluster = LocalCluster(tmp_path / "cluster", new_etcd.url, cluster="seeded", config_toml=CONFIG)
    yield cluster
    cluster.close()


def restore(node, copy) -> None:
    lance_dr("restore", "--from", copy, "--to", node.data_dir, "--node-id", node.node_id)


@pytest.fixture
def seeded(tmp_path, nodes):
    """A three-node cluster on a new etcd, every node restored from one shipped copy."""
    copy, ids, expected = shipped_copy(tmp_path, "copy")
    for node in nodes.nodes.values():
        restore(node, copy)
    restored = {n: file_identities(node, ids) for n, node in nodes.nodes.items()}
    nodes.start(timeout=DEADLINE_S)
    return nodes, ids, expected, restored


def test_a_cluster_seeded_from_one_copy_resyncs_only_the_active_tails(seeded):
    cluster, ids, expected, restored = seeded
    leader = cluster.leader()
    assert all(restored[n] for n in restored), "the copy holds sealed segments"

    for node in cluster.nodes.values():
        for name, topic_id in ids.items():
            until(lambda: fetched_batches(node, topic_id) == expected[name],
                  f"node {node.node_id} serving every restored batch of {name} at its offset")

    # The cluster took over the copy's ids: an existing name keeps its id, a new topic and a
    # new producer get ids the copy never used.
    with client(leader) as conn:
        reply = conn.request(CreateTopic("orders"))
        assert isinstance(reply, TopicResponse) and int(reply.data["id"]) == ids["orders"], reply
        reply = conn.request(CreateTopic("refunds"))
        assert isinstance(reply, TopicResponse), reply
        assert int(reply.data["id"]) > max(ids.values())
        reply = conn.request(InitProducer(0, ids["orders"]))
        assert isinstance(reply, ProducerResponse), reply
        assert reply.producer_id > PRODUCERS_BEFORE

        new = [[b"after-seed-%d-%d" % (i, j) for j in range(3)] for i in range(20)]
        for i, values in enumerate(new, 1):
            conn.ingest(ids["orders"], i, values)
        for i in range(1, len(new) + 1):
            ack = conn.recv()
            assert isinstance(ack, Ack) and ack.batch_id == i, ack

    written = [v for batch in new for v in batch]
    for node in cluster.nodes.values():
        until(lambda: [v for _, records in fetched_batches(node, ids["orders"])
                       for v in records][-len(written):] == written,
              f"node {node.node_id} serving the writes made after seeding")
        assert fetched_batches(node, ids["orders"])[:len(expected["orders"])] == expected["orders"]

    for name in ids:
        leader_sealed = sealed_hashes(leader, name)
        for node in cluster.followers(leader):
            until(lambda: set(leader_sealed) <= set(sealed_hashes(node, name)),
                  f"node {node.node_id} holding the leader's sealed segments of {name}")
            found = sealed_hashes(node, name)
            assert {k: found[k] for k in leader_sealed} == leader_sealed

    # Sealed segments of the copy were never sent again: same file, never written since.
    for n, node in cluster.nodes.items():
        now = file_identities(node, ids)
        assert {k: now.get(k) for k in restored[n]} == restored[n], f"node {n}"


def test_a_node_restored_from_another_copy_does_not_pass_its_bytes_off_as_the_clusters(
        tmp_path, nodes):
    copy, ids, expected = shipped_copy(tmp_path, "copy")
    other, other_ids, other_expected = shipped_copy(tmp_path, "other")
    assert other_ids == ids and other_expected != expected   # same names and ids, other records
    stranger = nodes.nodes[3]
    for node in nodes.nodes.values():
        restore(node, other if node is stranger else copy)
    for node_id in (1, 2):
        nodes.nodes[node_id].start()
    leader = nodes.nodes[nodes.wait_ready(DEADLINE_S, nodes=(1, 2))]
    stranger.start()

    until(lambda: "copy the topic anew" in stranger.log(),
          "node 3 refusing to follow with bytes from another copy")
    for name, topic_id in ids.items():
        served = fetched_batches(stranger, topic_id)
        assert served == expected[name][:len(served)], f"node 3 serving {name} from another copy"
    with client(leader) as conn:
        reply = conn.produce(ids["orders"], 1, [b"still acknowledged by two of three"])
    assert isinstance(reply, Ack), reply
