"""Fixtures that start a real etcd for the replication tests (import them into a test module)."""
import asyncio

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

