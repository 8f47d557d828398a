"""Fixtures of the DR tests: real data directories written with lance_store, and real targets
(a local folder, fsspec memory://, an rsync daemon and an S3-compatible server on loopback)."""
from __future__ import annotations

import os
import uuid

import pytest

import lance_store
from lance_dr.targets import open_target
from lance_dr.testing.servers import start_rsync_daemon, start_s3_server

SMALL_SEGMENTS = lance_store.StoreConfig(segment_max_bytes=16 << 10)


@pytest.fixture(scope="session")
def rsync_daemon(tmp_path_factory):
    daemon = start_rsync_daemon(str(tmp_path_factory.mktemp("rsyncd")))
    yield daemon
    daemon.stop()


@pytest.fixture
def rsyncd(rsync_daemon):
    """The session's daemon, running (a test may have stopped it)."""
    if not rsync_daemon.running:
        rsync_daemon.restart()
    return rsync_daemon


@pytest.fixture(scope="session")
def s3_server():
    server = start_s3_server()
    server.make_bucket("lance-dr")
    yield server
    server.stop()


def fresh_target(kind: str, tmp_path, rsyncd=None, s3_server=None):
    unique = uuid.uuid4().hex[:12]
    if kind == "local":
        return open_target(str(tmp_path / f"copy-{unique}"))
    if kind == "memory":
        return open_target(f"memory://lance-dr-{unique}")
    if kind == "rsync":
        return open_target(rsyncd.url(f"copy-{unique}"))
    if kind == "s3":
        return open_target(f"s3://lance-dr/copy-{unique}", s3_server.options)
    raise ValueError(kind)


@pytest.fixture(params=["local", "memory", "rsync", "s3"])
def any_target(request, tmp_path):
    """One fresh, empty target of each kind."""
    kind = request.param
    rsyncd = request.getfixturevalue("rsyncd") if kind == "rsync" else None
    s3 = request.getfixturevalue("s3_server") if kind == "s3" else None
    return fresh_target(kind, tmp_path, rsyncd, s3)


def write_topics(path, *, batches: int = 40, per_batch: int = 50, topics=("orders", "clicks"),
                 config=SMALL_SEGMENTS, node_id: int = 7, pad: int = 0) -> dict[str, list]:
    """A data directory with a few topics spanning several sealed segments; returns the
    AppendResults per topic."""
    out = {}
    with lance_store.open(path, create=True, node_id=node_id, config=config) as store:
        for name in topics:
            topic = store.create_topic(name, exist_ok=True)
            values = [[b"%s-%d-%d" % (name.encode(), i, j) + b"." * pad for j in range(per_batch)]
                      for i in range(batches)]
            # Groups of batches: one write and one sync each, several segments in all.
            out[name] = [r for k in range(0, batches, 8) for r in topic.append_many(values[k:k + 8])]
    return out


def append_more(path, topic: str, batches: int, *, tag: bytes = b"more", config=SMALL_SEGMENTS) -> list:
    with lance_store.open(path, config=config) as store:
        t = store.topic(topic)
        return [t.append([b"%s-%d-%d" % (tag, i, j) for j in range(10)]) for i in range(batches)]


def records_of(path) -> dict[str, list[tuple[int, int, int, bytes]]]:
    """Every record of every topic as (offset, timestamp, key_low, value)."""
    out = {}
    with lance_store.open(path, readonly=True) as store:
        for topic in store.topics():
            out[topic.name] = [(r.offset, r.sortkey.timestamp_ns, r.sortkey.low, r.value) for r in topic.records()]
    return out


@pytest.fixture
def data_dir(tmp_path):
    path = str(tmp_path / "data")
    write_topics(path)
    return path


def segment_objects(target) -> list[str]:
    return sorted(p for p in target.list("segments") if p.endswith(".lnc") or ".lnc~g" in p)


def flip_bit(path: str, pos: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x10]))


def local_root(target) -> str:
    return getattr(target, "root")


def env_without_config():
    env = dict(os.environ)
    env.pop("LANCE_CONFIG", None)
    return env
