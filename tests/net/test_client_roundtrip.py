"""The client against a real broker: records, offsets and SortKeys out exactly as they went in."""
import asyncio
import datetime
import time

import numpy as np
import pytest

from lance_net.client import (
    Admin, Consumer, Delivered, Producer, UnknownTopic, sync,
)
from lance_store.records import JSON, RAW
from lance_store.segment.header import BATCH_OVERHEAD


def run(coro):
    return asyncio.run(coro)


def _values(n: int, seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 3000, n)
    return [rng.bytes(int(s)) for s in sizes]


def test_produce_then_consume_gives_the_same_records_offsets_and_sortkeys(module_broker):
    values = _values(3000)

    async def main():
        async with Producer(module_broker.endpoint, "rt-exact", create_topic=True,
                            batch_bytes=64 * 1024) as producer:
            deliveries = [producer.send(v) for v in values]
            delivered = [await d for d in deliveries]
            assert producer.stats.batches_acked > 10  # several batches, several frames
        async with Consumer(module_broker.endpoint, "rt-exact", start_from="earliest") as consumer:
            records = []
            while len(records) < len(values):
                records += await consumer.poll()
            assert await consumer.poll(timeout=0.05) == []
            return delivered, records

    delivered, records = run(main())
    assert [r.value for r in records] == values
    assert [r.type for r in records] == [RAW] * len(values)
    assert [d.offset for d in delivered] == [r.offset for r in records]
    assert [d.sortkey for d in delivered] == [r.sortkey for r in records]
    keys = [r.sortkey.as_int() for r in records]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # The first record sits right after the first batch header.
    assert records[0].offset == BATCH_OVERHEAD
    assert delivered[0] == Delivered(BATCH_OVERHEAD, records[0].sortkey, 1, 0)


def test_typed_records_and_poll_batch_columns(module_broker):
    sent = [(JSON, b'{"a": 1}'), b"plain", (JSON, b"[]"), (0xFF, 7, b"extended")]

    async def main():
        async with Producer(module_broker.endpoint, "rt-typed", create_topic=True) as producer:
            last = None
            for value in sent:
                last = producer.send(value)
            await last
        async with Consumer(module_broker.endpoint, "rt-typed") as consumer:
            return await consumer.poll_batch()

    batch = run(main())
    assert len(batch) == 4
    assert batch.type.tolist() == [JSON, RAW, JSON, 0xFF]
    assert batch.ext_type.tolist() == [0, 0, 0, 7]
    assert batch.values() == [b'{"a": 1}', b"plain", b"[]", b"extended"]
    assert bytes(batch.value(1)) == b"plain"
    assert batch.length.tolist() == [8, 5, 2, 8]
    assert np.all(np.diff(batch.offset.astype(np.int64)) > 0)
    assert batch[3].value == b"extended" and batch[3].ext_type == 7
    assert batch.next_offset == int(batch.offset[-1]) + 7 + 8


def test_send_batch_and_send_payload_report_where_the_batch_landed(module_broker):
    async def main():
        async with Producer(module_broker.endpoint, "rt-batches", create_topic=True) as producer:
            first = await producer.send_batch([b"a", b"bb", b"ccc"])
            second = await producer.send_batch([b"d"])
        async with Consumer(module_broker.endpoint, "rt-batches") as consumer:
            return first, second, await consumer.poll()

    first, second, records = run(main())
    assert first.record_count == 3 and second.record_count == 1
    assert first.offset == 0 and second.offset == BATCH_OVERHEAD + 5 * 3 + 6
    assert second.sequence == first.sequence + 1
    assert [r.value for r in records] == [b"a", b"bb", b"ccc", b"d"]
    assert records[0].sortkey == first.sortkey and records[3].sortkey == second.sortkey


def test_seek_by_time_offset_earliest_and_latest(module_broker):
    async def main():
        async with Producer(module_broker.endpoint, "rt-seek", create_topic=True) as producer:
            early = await producer.send_batch([b"early-1", b"early-2"])
            await asyncio.sleep(0.01)
            between = time.time_ns()
            await asyncio.sleep(0.01)
            late = await producer.send_batch([b"late-1", b"late-2"])
        async with Consumer(module_broker.endpoint, "rt-seek", start_from="latest") as consumer:
            at_latest = await consumer.poll(timeout=0.05)
            assert consumer.position == late.offset + BATCH_OVERHEAD + 2 * (5 + 6)
            found = await consumer.seek_to_time(between)
            by_time = await consumer.poll()
            when = datetime.datetime.fromtimestamp(between / 1e9, datetime.timezone.utc)
            by_datetime = await consumer.seek_to_time(when)
            await consumer.seek(early.offset)
            by_offset = await consumer.poll()
            low = await consumer.seek_to_earliest()
            return early, late, at_latest, found, by_time, by_datetime, by_offset, low

    early, late, at_latest, found, by_time, by_datetime, by_offset, low = run(main())
    assert at_latest == []
    assert found == late.offset
    assert [r.value for r in by_time] == [b"late-1", b"late-2"]
    # A datetime has microseconds only: it may land on the same batch or, at most, earlier.
    assert by_datetime in (early.offset, late.offset)
    assert [r.value for r in by_offset] == [b"early-1", b"early-2", b"late-1", b"late-2"]
    assert low == 0 == early.offset


def test_poll_max_records_resumes_from_the_batch_not_fully_returned(module_broker):
    async def main():
        async with Producer(module_broker.endpoint, "rt-partial", create_topic=True) as producer:
            first = await producer.send_batch([b"1", b"2", b"3"])
            second = await producer.send_batch([b"4", b"5"])
        async with Consumer(module_broker.endpoint, "rt-partial") as consumer:
            part = await consumer.poll(max_records=2)
            middle = consumer.position
            rest = await consumer.poll(max_records=2)
            after = consumer.position
            tail = await consumer.poll()
            return first, second, part, middle, rest, after, tail, consumer.position

    first, second, part, middle, rest, after, tail, end = run(main())
    assert [r.value for r in part] == [b"1", b"2"]
    assert middle == first.offset  # record 3 is still unread: its batch is where to resume
    assert [r.value for r in rest] == [b"3", b"4"]
    assert after == second.offset
    assert [r.value for r in tail] == [b"5"]
    assert end == second.offset + BATCH_OVERHEAD + 2 * 6


def test_admin_topics_and_cluster_status(module_broker):
    async def main():
        async with Admin(module_broker.endpoint) as admin:
            created = await admin.create_topic("adm-a", max_age_secs=60, max_bytes=1 << 30)
            again = await admin.create_topic("adm-a")
            listed = [t["name"] for t in await admin.list_topics()]
            by_name = await admin.get_topic("adm-a")
            by_id = await admin.get_topic(created["id"])
            changed = await admin.set_retention("adm-a", max_age_secs=0, max_bytes=4096)
            status = await admin.cluster_status()
            deleted = await admin.delete_topic("adm-a")
            with pytest.raises(UnknownTopic):
                await admin.get_topic("adm-a")
            with pytest.raises(UnknownTopic):
                await admin.get_topic(created["id"])
            return created, again, listed, by_name, by_id, changed, status, deleted

    created, again, listed, by_name, by_id, changed, status, deleted = run(main())
    assert created["retention"] == {"max_age_secs": 60, "max_bytes": 1 << 30}
    assert again["id"] == created["id"] == by_name["id"] == by_id["id"] == deleted
    assert "adm-a" in listed
    assert changed["retention"] == {"max_age_secs": 0, "max_bytes": 4096}
    assert status["mode"] == "standalone" and status["is_leader"] is True
    assert status["leader_addr"] == module_broker.endpoint


def test_a_producer_for_a_missing_topic_fails_unless_asked_to_create_it(module_broker):
    async def main():
        with pytest.raises(UnknownTopic):
            await Producer(module_broker.endpoint, "rt-missing").start()
        async with Producer(module_broker.endpoint, "rt-missing", create_topic=True) as producer:
            return producer.topic_info["name"], producer.producer_id

    name, producer_id = run(main())
    assert name == "rt-missing" and producer_id > 0


def test_blocking_wrappers(module_broker):
    with sync.Admin(module_broker.endpoint) as admin:
        topic = admin.create_topic("rt-sync")
    values = [b"v%d" % i for i in range(2500)]
    with sync.Producer(module_broker.endpoint, "rt-sync", batch_bytes=4096) as producer:
        deliveries = [producer.send(v) for v in values]
        producer.flush()
        last = deliveries[-1].result(timeout=30)
        first = deliveries[0].result(timeout=30)
        assert producer.stats.records_acked == len(values)
    with sync.Consumer(module_broker.endpoint, "rt-sync") as consumer:
        got = []
        while len(got) < len(values):
            got += consumer.poll(timeout=5)
        assert consumer.topic_id == topic["id"]
    assert [r.value for r in got] == values
    assert first.offset == got[0].offset and last.offset == got[-1].offset
    assert last.sortkey == got[-1].sortkey


def test_async_iteration_follows_new_records(module_broker):
    async def main():
        async with Producer(module_broker.endpoint, "rt-follow", create_topic=True) as producer:
            await producer.send_batch([b"first"])
            async with Consumer(module_broker.endpoint, "rt-follow", max_wait_ms=100) as consumer:
                seen = []
                async for record in consumer:
                    seen.append(record.value)
                    if record.value == b"first":
                        await producer.send_batch([b"second", b"third"])
                    if len(seen) == 3:
                        break
                return seen

    assert run(main()) == [b"first", b"second", b"third"]


def test_the_ieee_dialect_round_trip(module_broker):
    async def main():
        async with Producer(module_broker.endpoint, "rt-ieee", create_topic=True,
                            dialect="ieee") as producer:
            delivered = await producer.send(b"upstream checksums")
        async with Consumer(module_broker.endpoint, "rt-ieee", dialect="ieee") as consumer:
            return delivered, await consumer.poll()

    delivered, records = run(main())
    assert [r.value for r in records] == [b"upstream checksums"]
    assert records[0].offset == delivered.offset and records[0].sortkey == delivered.sortkey
