"""Topic.append_async: groups in flight, confirmed in log order, across rotations."""
import asyncio
import os

import pytest

import lance_store
from lance_store import StoreConfig
from lance_store.verify import verify_path


@pytest.fixture(params=["uring", "pwritev"])
def config(request):
    from lance_store.uring import select_backend
    try:
        select_backend(request.param).close()
    except OSError as exc:
        pytest.fail(f"backend {request.param} unavailable: {exc}")
    return StoreConfig(backend=request.param, segment_max_bytes=32 << 10, buffer_size=16 << 10)


def test_concurrent_appends_come_back_in_log_order(tmp_path, config):
    async def main():
        with lance_store.open(tmp_path / "d", create=True, config=config) as store:
            topic = store.create_topic("t")
            values = [[os.urandom(n % 3000 + 1)] * (n % 5 + 1) for n in range(300)]
            results = await asyncio.gather(*[topic.append_async(v) for v in values])
            offsets = [r.offset for r in results]
            assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
            assert results[-1].next_offset == topic.high_watermark
            assert len(topic.segments) > 3                     # rotated while in flight
            got = [r.value for r in topic.records()]
            assert got == [v for group in values for v in group]
            return topic.high_watermark

    high = asyncio.run(main())
    report = verify_path(tmp_path / "d")
    assert not report.damaged and report.topics[0].high == high


def test_blocking_appends_and_async_appends_share_the_log(tmp_path, config):
    async def main():
        with lance_store.open(tmp_path / "d", create=True, config=config) as store:
            topic = store.create_topic("t")
            first = topic.append([b"blocking"])
            second = await topic.append_async([b"async"])
            assert second.offset == first.next_offset
            big = await topic.append_async([os.urandom(200_000)])   # larger than a buffer
            assert big.offset == second.next_offset
            await topic.drain()
            third = topic.append([b"blocking again"])
            assert third.offset == big.next_offset
            return [r.value for r in topic.records()]

    values = asyncio.run(main())
    assert values[0] == b"blocking" and values[1] == b"async" and values[-1] == b"blocking again"
    with lance_store.open(tmp_path / "d", readonly=True) as store:
        assert [r.value for r in store.topic("t").records()] == values


def test_a_bad_batch_fails_alone(tmp_path, config):
    async def main():
        with lance_store.open(tmp_path / "d", create=True, config=config) as store:
            topic = store.create_topic("t")
            with pytest.raises(lance_store.LanceError):
                await topic.append_async([(0xFE, b"engine only")])
            ok = await topic.append_async([b"fine"])
            assert ok.offset == 0

    asyncio.run(main())


def test_more_topics_in_flight_than_pooled_buffers(tmp_path, config):
    """Every topic keeps groups in flight; when the shared pool runs dry a pump
    waits for a completion instead of blocking the event loop."""
    small_pool = StoreConfig(backend=config.backend, buffer_count=2, buffer_size=16 << 10)

    async def main():
        with lance_store.open(tmp_path / "d", create=True, config=small_pool) as store:
            topics = [store.create_topic(f"t{i}") for i in range(6)]
            values = [os.urandom(3000)] * 2
            results = await asyncio.wait_for(asyncio.gather(
                *[t.append_async(values) for _ in range(40) for t in topics]), timeout=60)
            assert len(results) == 240
            return [t.high_watermark for t in topics]

    highs = asyncio.run(main())
    with lance_store.open(tmp_path / "d", readonly=True) as store:
        assert [store.topic(f"t{i}").high_watermark for i in range(6)] == highs
        assert all(len(list(store.topic(f"t{i}").records())) == 80 for i in range(6))


def test_writers_woken_together_fill_two_groups_that_do_not_share_a_block(tmp_path, config):
    """Many single-record writers: a confirmed group wakes them in two halves, each half
    becomes a group, and every group but an idle one ends on a 4 KiB boundary, so the next
    group never has to wait to rewrite its last block."""
    from lance_store.pipeline import AsyncAppender
    starts = []
    real_done = AsyncAppender._done

    def note(self, flight, result):
        starts.append((flight.group.file_pos, flight.group.data_end))
        return real_done(self, flight, result)

    async def main(topic):
        async def writer(i):
            for j in range(20):
                await topic.append_async([b"%d-%d" % (i, j)])
        await asyncio.gather(*[writer(i) for i in range(32)])

    AsyncAppender._done = note
    try:
        with lance_store.open(tmp_path / "d", create=True,
                              config=StoreConfig(backend=config.backend)) as store:
            topic = store.create_topic("t")
            asyncio.run(main(topic))
            assert sorted(r.value for r in topic.records()) == sorted(
                b"%d-%d" % (i, j) for i in range(32) for j in range(20))
    finally:
        AsyncAppender._done = real_done
    assert len(starts) > 4
    # Where groups end in the file: block-aligned unless nothing else was under way.
    aligned = sum(1 for _, end in starts[1:-1] if end % 4096 == 0)
    assert aligned >= (len(starts) - 2) * 0.8
    assert not verify_path(tmp_path / "d").damaged
