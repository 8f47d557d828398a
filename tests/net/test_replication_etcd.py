"""The etcd client and the lease rule, against a real etcd server."""
import asyncio
import time

import pytest

from lance_net.replication.etcd import (
    EtcdClient, EtcdError, EtcdUnavailable, LeaseNotFound, compare_created, compare_value,
    delete_op, prefix_end, put_op, range_op,
)
from lance_net.replication.lease import Lease
from lance_net.replication.testing import free_port

from .replication_fixtures import etcd, private_etcd, run  # noqa: F401  (fixtures)


def test_prefix_end():
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_keys_ranges_and_deletes(etcd):
    async def main():
        c = EtcdClient(etcd.url)
        rev = await c.put("/kv/a", b"1")
        await c.put("/kv/b", "2")
        await c.put("/kvz", "outside")
        kv = await c.get("/kv/a")
        assert (kv.key, kv.value, kv.create_revision, kv.version) == (b"/kv/a", b"1", rev, 1)
        kvs, revision = await c.range("/kv/", prefix=True)
        assert [k.key for k in kvs] == [b"/kv/a", b"/kv/b"] and revision >= rev
        assert await c.get("/kv/none") is None
        assert await c.delete("/kv/", prefix=True) == 2
        assert (await c.range("/kv/", prefix=True))[0] == []
        assert (await c.get("/kvz")).value == b"outside"
        await c.close()
    run(main())


def test_transactions(etcd):
    async def main():
        c = EtcdClient(etcd.url)
        won = await c.txn([compare_created("/txn/k", 0)], [put_op("/txn/k", "first"), range_op("/txn/k")],
                          [range_op("/txn/k")])
        lost = await c.txn([compare_created("/txn/k", 0)], [put_op("/txn/k", "second")],
                           [range_op("/txn/k")])
        assert won.succeeded and not lost.succeeded
        assert lost.ranges()[0][0].value == b"first"
        assert won.ranges()[0][0].create_revision == lost.ranges()[0][0].create_revision
        swapped = await c.txn([compare_value("/txn/k", "first")], [delete_op("/txn/k")])
        assert swapped.succeeded and await c.get("/txn/k") is None
        await c.close()
    run(main())


def test_errors_name_the_endpoint_and_the_key(etcd):
    async def main():
        c = EtcdClient(etcd.url)
        with pytest.raises(LeaseNotFound) as info:
            await c.put("/err/key", "v", lease=0x1234)
        text = str(info.value)
        assert etcd.url + "/v3/kv/put" in text and "'/err/key'" in text and "lease not found" in text
        dead = f"http://127.0.0.1:{free_port()}"
        down = EtcdClient(dead, timeout=1)
        with pytest.raises(EtcdUnavailable) as info:
            await down.get("/err/other")
        assert dead in str(info.value) and "'/err/other'" in str(info.value)
        # a dead first endpoint is skipped
        both = EtcdClient([dead, etcd.url], timeout=1)
        await both.put("/err/ok", "1")
        assert (await both.get("/err/ok")).value == b"1" and both.endpoint == etcd.url
        for client in (c, down, both):
            await client.close()
    run(main())


def test_watch_sees_puts_and_deletes(etcd):
    async def main():
        c = EtcdClient(etcd.url)
        _, rev = await c.range("/watch/", prefix=True)
        async with c.watch("/watch/", prefix=True, start_revision=rev + 1) as w:
            await c.put("/watch/x", "1")
            await c.put("/watch/y", "2")
            await c.delete("/watch/x")
            seen = [await w.__anext__() for _ in range(3)]
        assert [(e.type, e.kv.key) for e in seen] == [
            ("PUT", b"/watch/x"), ("PUT", b"/watch/y"), ("DELETE", b"/watch/x")]
        assert seen[0].kv.value == b"1" and seen[0].revision > rev
        await c.close()
    run(main())


def test_lease_keeps_keys_alive_and_revoking_drops_them(etcd):
    async def main():
        c = EtcdClient(etcd.url)
        lease = Lease(c, 2)
        await lease.grant()
        assert lease.valid() and lease.ttl == 2
        await c.put("/lease/k", "v", lease=lease.id)
        lease.start()
        await asyncio.sleep(3)            # longer than the TTL: only keepalives hold the key
        assert (await c.get("/lease/k")).lease == lease.id
        assert lease.valid()
        await lease.revoke()
        assert not lease.valid() and lease.lost.is_set()
        assert await c.get("/lease/k") is None
        with pytest.raises(LeaseNotFound):
            await c.lease_keepalive(lease.id)
        await c.close()
    run(main())


def test_lease_margin_is_at_least_half_a_second(etcd):
    with pytest.raises(ValueError, match="margin"):
        Lease(EtcdClient(etcd.url), 5, margin=0.2)


def test_validity_ends_within_the_ttl_when_keepalives_go_unanswered(private_etcd):
    async def main():
        c = EtcdClient(private_etcd.url, timeout=0.5)
        lease = Lease(c, 2, margin=0.5)
        await lease.grant()
        lease.start()
        await asyncio.sleep(0.8)
        assert lease.valid()
        private_etcd.pause()
        try:
            await asyncio.sleep(0.7)          # a keepalive in flight at the pause times out
            renewed = lease.last_renewed
            assert lease.deadline == renewed + lease.ttl - lease.margin
            while lease.valid() and time.monotonic() < renewed + lease.ttl:
                await asyncio.sleep(0.02)
            assert not lease.valid()          # false before etcd itself could expire the lease
            assert lease.last_renewed == renewed   # no keepalive succeeded while etcd was frozen
            assert private_etcd.url in str(lease.last_error)
        finally:
            private_etcd.resume()
        await lease.stop()
        await c.close()
    run(main())


def test_a_lease_expired_in_etcd_is_reported_lost(private_etcd):
    async def main():
        c = EtcdClient(private_etcd.url, timeout=1)
        lease = Lease(c, 2)
        await lease.grant()
        await c.put("/lost/k", "v", lease=lease.id)
        await asyncio.sleep(3.2)          # no keepalive: etcd expires it
        assert not lease.valid()
        assert await lease.keepalive() is False
        assert lease.lost.is_set() and isinstance(lease.last_error, LeaseNotFound)
        assert await c.get("/lost/k") is None
        await c.close()
    run(main())


def test_killing_etcd_makes_requests_fail_with_the_endpoint(private_etcd):
    async def main():
        c = EtcdClient(private_etcd.url, timeout=1)
        lease = Lease(c, 2)
        await lease.grant()
        private_etcd.kill()
        assert await lease.keepalive() is False
        assert isinstance(lease.last_error, EtcdUnavailable)
        assert private_etcd.url in str(lease.last_error)
        with pytest.raises(EtcdError, match="no endpoint answered"):
            await c.get("/gone")
        await c.close()
    run(main())
