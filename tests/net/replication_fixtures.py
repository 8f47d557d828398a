"""Fixtures that start a real etcd for the replication tests (import them into a test module)."""
import asyncio
from pathlib import Path

import pytest

from lance_net.replication.testing import EtcdServer


@pytest.fixture(scope="module")
def etcd():
    """One etcd for a module; tests keep to their own key prefixes."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def private_etcd():
    """An etcd of the test's own, for tests that pause or kill it."""
    with EtcdServer() as server:
        yield server


def run(coro, timeout: float = 30.0):
    """Run a coroutine to completion on a fresh event loop, with a deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))



def replica_files(topic) -> dict:
    """What two replicas of a topic must agree on: each segment's name and data (an active
    segment up to its data length: past it a file may hold zeros), the indexes, the epochs."""
    out = {}
    for path in sorted(Path(topic.folder).iterdir()):
        if path.suffix in (".lnc", ".idx") or path.name == "epochs":
            data = path.read_bytes()
            out[path.name] = data[:topic.active.size] if path.name == topic.active.name.filename else data
    return out
