"""Committed offsets: on the broker (surviving its restart), in a lock file, in memory."""
import asyncio
import fcntl
import os
import threading

from lance_net.client import (
    Admin, BrokerOffsetStore, Consumer, LockFileOffsetStore, MemoryOffsetStore, Producer,
)
from lance_net.client.offsets import consumer_id_for


def run(coro):
    return asyncio.run(coro)


async def _produce(endpoint: str, topic: str, batches: list[list[bytes]]) -> list:
    async with Producer(endpoint, topic, create_topic=True) as producer:
        return [await producer.send_batch(b) for b in batches]


async def _read(consumer: Consumer, count: int) -> list[bytes]:
    values = []
    while len(values) < count:
        values += [r.value for r in await consumer.poll(max_records=count - len(values))]
    return values


def test_offsets_committed_on_the_broker_survive_its_restart(broker):
    batches = [[b"a1", b"a2"], [b"b1", b"b2"], [b"c1"]]
    acks = run(_produce(broker.endpoint, "committed", batches))

    async def first_run():
        store = BrokerOffsetStore(broker.endpoint)
        async with Consumer(broker.endpoint, "committed", offset_store=store,
                            consumer_name="billing") as consumer:
            assert consumer.position == 0  # nothing committed: the broker says the low watermark
            values = await _read(consumer, 3)
            committed = await consumer.commit()
            return values, committed

    values, committed = run(first_run())
    assert values == [b"a1", b"a2", b"b1"]
    assert committed == acks[1].offset  # b2 is unread, so its batch is where to resume

    broker.restart()

    async def second_run():
        store = BrokerOffsetStore(broker.endpoint)
        async with Consumer(broker.endpoint, "committed", offset_store=store,
                            consumer_name="billing") as consumer:
            resumed_at = consumer.position
            return resumed_at, await _read(consumer, 3)

    resumed_at, rest = run(second_run())
    assert resumed_at == committed
    assert rest == [b"b1", b"b2", b"c1"]
    assert broker.metric("lance_consumer_committed_offset", topic="committed",
                         consumer=str(consumer_id_for("billing"))) == committed


def test_lock_file_store_keeps_the_offset_in_the_upstream_layout(module_broker, tmp_path):
    acks = run(_produce(module_broker.endpoint, "lockfile", [[b"1"], [b"2"], [b"3"]]))

    async def consume(count: int):
        store = LockFileOffsetStore(tmp_path, "reports")
        async with Consumer(module_broker.endpoint, "lockfile", offset_store=store,
                            consumer_name="reports", consumer_id=42) as consumer:
            values = await _read(consumer, count)
            await consumer.commit()
            return values, consumer.topic_id

    first, topic_id = run(consume(2))
    path = tmp_path / "reports" / f"topic-{topic_id}-consumer-42.offset"
    assert path.read_text() == f"{acks[2].offset}\n"
    assert (tmp_path / "reports" / f"topic-{topic_id}-consumer-42.lock").exists()
    second, _ = run(consume(1))
    assert first == [b"1", b"2"] and second == [b"3"]
    assert path.read_text() == f"{acks[2].offset + 77 + 6}\n"


def test_lock_file_store_waits_for_the_lock_held_by_another_writer(tmp_path):
    store = LockFileOffsetStore(tmp_path, "shared")
    store.write(7, 1, 100)
    lock_path = tmp_path / "shared" / "topic-7-consumer-1.lock"
    fd = os.open(lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Thread(target=store.write, args=(7, 1, 200))
    writer.start()
    writer.join(0.3)
    held = writer.is_alive()
    value_while_held = (tmp_path / "shared" / "topic-7-consumer-1.offset").read_text()
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    writer.join(10)
    assert held, "the write went ahead while another process held the lock"
    assert value_while_held == "100\n"
    assert store.read(7, 1) == 200
    assert store.read(7, 2) is None


def test_memory_store_and_explicit_commit(module_broker):
    acks = run(_produce(module_broker.endpoint, "memory-store", [[b"x"], [b"y"]]))

    async def main():
        store = MemoryOffsetStore()
        async with Consumer(module_broker.endpoint, "memory-store", offset_store=store,
                            consumer_id=5) as consumer:
            await consumer.commit(acks[1].offset)
            topic_id = consumer.topic_id
        async with Consumer(module_broker.endpoint, "memory-store", offset_store=store,
                            consumer_id=5) as consumer:
            return store.offsets, topic_id, await _read(consumer, 1)

    offsets, topic_id, values = run(main())
    assert offsets == {(topic_id, 5): acks[1].offset}
    assert values == [b"y"]


def test_a_position_removed_by_retention_resets_to_the_earliest_record(broker_factory):
    broker = broker_factory({"io": {"segment_max_bytes": 64 * 1024},
                             "retention": {"check_interval_s": 1}})

    async def main():
        async with Admin(broker.endpoint) as admin:
            await admin.create_topic("retained", max_bytes=128 * 1024)
        async with Producer(broker.endpoint, "retained", batch_bytes=8 * 1024) as producer:
            for i in range(100):
                await producer.send_batch([b"%04d" % i + b"." * 8000])
        async with Consumer(broker.endpoint, "retained", start_from=0, max_wait_ms=50) as consumer:
            for _ in range(200):  # retention runs every second
                low, high = await consumer.offsets()
                if low > 0:
                    break
                await asyncio.sleep(0.05)
            records = []
            while not records:
                records = await consumer.poll()
            return low, high, consumer.resets, records

    low, high, resets, records = run(main())
    assert 0 < low < high
    assert resets == 1
    assert records[0].offset == low + 77
    assert int(records[0].value[:4]) > 0  # the first batches are gone
