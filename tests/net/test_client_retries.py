"""The producer across lost connections, a crashed broker, backpressure and redirects:
every record lands exactly once, in order."""
import asyncio
import socket
import struct

import pytest

from lance_net.client import Admin, BatchRefused, Consumer, NotLeader, Producer
from lance_net.client.options import Backoff
from lance_net.protocol import (
    NEED_DATA, Connection, ErrorResponse, NOT_LEADER, Role, error_message,
)



def run(coro):
    return asyncio.run(coro)


async def _consume_all(endpoint: str, topic: str, count: int) -> list:
    async with Consumer(endpoint, topic) as consumer:
        records = []
        while len(records) < count:
            records += await consumer.poll(timeout=5)
        records += await consumer.poll(timeout=0.2)  # nothing more may follow
        return records


def _reset(writer) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dead peer or a broken network does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.transport.abort()


class LoopbackServer:
    """A TCP server on a free loopback port; subclasses answer each connection in `_serve`."""

    _server = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader, writer):
        raise NotImplementedError


class CuttingProxy(LoopbackServer):
    """Relays TCP connections to the broker. The first connection whose client sends more than
    `cut_after` bytes stops getting the broker's answers; once the broker has acknowledged at
    least one more batch on it (44 withheld bytes), both sides are reset. Later connections are
    relayed whole."""

    def __init__(self, target: tuple[str, int], cut_after: int):
        self.target = target
        self.cut_after = cut_after
        self.cut = False
        self.connections = 0

    async def _serve(self, client_reader, client_writer):
        self.connections += 1
        broker_reader, broker_writer = await asyncio.open_connection(*self.target)
        state = {"sent": 0, "withheld": 0, "armed": False}

        async def upstream():
            while data := await client_reader.read(65536):
                broker_writer.write(data)
                state["sent"] += len(data)
                if not self.cut and state["sent"] > self.cut_after:
                    self.cut = True
                    state["armed"] = True
            broker_writer.close()

        async def downstream():
            while data := await broker_reader.read(65536):
                if state["armed"]:
                    state["withheld"] += len(data)
                    if state["withheld"] >= 44:
                        _reset(client_writer)
                        _reset(broker_writer)
                        return
                    continue
                client_writer.write(data)
            client_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)


def test_a_connection_cut_mid_stream_loses_and_duplicates_nothing(broker):
    values = [b"%05d" % i + b"-" * 1000 for i in range(3000)]

    async def main():
        proxy = CuttingProxy(broker.address, cut_after=1_000_000)
        endpoint = await proxy.start()
        try:
            async with Producer(endpoint, "cut", create_topic=True, batch_bytes=32 * 1024,
                                max_in_flight=8,
                                backoff=Backoff(initial_s=0.01, max_s=0.1)) as producer:
                deliveries = [producer.send(v) for v in values]
                delivered = [await d for d in deliveries]
                stats = producer.stats
        finally:
            await proxy.close()
        return proxy, stats, delivered, await _consume_all(broker.endpoint, "cut", len(values))

    proxy, stats, delivered, records = run(main())
    assert proxy.cut and stats.reconnects == 1 and stats.resent >= 1
    assert [r.value for r in records] == values
    assert [d.offset for d in delivered] == [r.offset for r in records]
    # The broker made at least one withheld batch durable, then saw it again and kept one copy.
    assert broker.metric("lance_ingest_duplicates_total") >= 1


def test_a_broker_killed_and_restarted_mid_stream(broker):
    values = [b"r%06d" % i for i in range(40_000)]

    async def main():
        async with Producer(broker.endpoint, "crash", create_topic=True, batch_bytes=16 * 1024,
                            backoff=Backoff(initial_s=0.05, max_s=0.5)) as producer:
            deliveries = [producer.send(v) for v in values[:20_000]]
            await deliveries[1000].acked()
            await asyncio.to_thread(broker.restart, kill=True)
            deliveries += [producer.send(v) for v in values[20_000:]]
            for delivery in deliveries:
                await delivery.acked()
            stats = producer.stats
        return stats, await _consume_all(broker.endpoint, "crash", len(values))

    stats, records = run(main())
    assert stats.reconnects >= 1
    assert [r.value for r in records] == values


def test_backpressure_halves_the_window_and_every_record_still_lands(broker_factory):
    broker = broker_factory({"network": {"backpressure_bytes": 64 * 1024}})
    values = [bytes([i % 251]) * 2048 for i in range(4000)]

    async def main():
        async with Producer(broker.endpoint, "bp", create_topic=True, batch_bytes=64 * 1024,
                            max_in_flight=32) as producer:
            deliveries = [producer.send(v) for v in values]
            for delivery in deliveries:
                await delivery.acked()
            stats = producer.stats
        return stats, await _consume_all(broker.endpoint, "bp", len(values))

    stats, records = run(main())
    assert stats.backpressure >= 1
    assert 1 <= stats.smallest_window <= 16
    assert stats.backpressure == broker.metric("lance_backpressure_events_total")
    assert [r.value for r in records] == values


class RedirectingNode(LoopbackServer):
    """Stands in for a node that is not the leader (an L3 follower): every request is answered
    `NOT_LEADER: redirect to <leader>`, as LWP.md section 3 specifies."""

    def __init__(self, leader: str):
        self.leader = leader
        self.requests = 0

    async def _serve(self, reader, writer):
        lwp = Connection(Role.SERVER)
        refusal = ErrorResponse(error_message(NOT_LEADER, f"redirect to {self.leader}"))
        while data := await reader.read(65536):
            lwp.receive_data(data)
            while lwp.next_event() is not NEED_DATA:
                self.requests += 1
                writer.write(lwp.send(refusal))
        writer.close()


def test_clients_follow_not_leader_redirects(broker):
    async def main():
        node = RedirectingNode(broker.endpoint)
        endpoint = await node.start()
        try:
            async with Admin(endpoint) as admin:
                topic = await admin.create_topic("redirected")
                moved_to = admin.session.endpoint
            async with Producer(endpoint, "redirected") as producer:
                delivered = await producer.send(b"via the leader")
                producer_endpoint = producer.endpoint
            async with Consumer(endpoint, "redirected") as consumer:
                records = await consumer.poll()
            with pytest.raises(NotLeader) as refused:
                async with Admin(endpoint, max_redirects=0) as admin:
                    await admin.list_topics()
            return topic, moved_to, delivered, producer_endpoint, records, node.requests, refused
        finally:
            await node.close()

    topic, moved_to, delivered, producer_endpoint, records, requests, refused = run(main())
    assert moved_to == producer_endpoint == broker.endpoint
    assert topic["name"] == "redirected" and requests >= 3
    assert [r.value for r in records] == [b"via the leader"]
    assert records[0].offset == delivered.offset
    assert refused.value.address == broker.endpoint


def test_a_refused_batch_fails_alone_and_the_batches_behind_it_are_renumbered(broker):
    async def main():
        async with Producer(broker.endpoint, "refused", create_topic=True) as producer:
            before = producer.send_batch([b"before"])
            # A record that claims 5 value bytes but has 3: the broker refuses the batch.
            broken = producer.send_payload(b"\x00\x05\x00\x00\x00abc", 1)
            after = [producer.send_batch([b"after-%d" % i]) for i in range(3)]
            first = await before
            with pytest.raises(BatchRefused) as refused:
                await broken
            rest = [await d for d in after]
            stats = producer.stats
        return first, refused.value, rest, stats, await _consume_all(broker.endpoint, "refused", 4)

    first, refused, rest, stats, records = run(main())
    assert refused.code == "INVALID_BATCH"
    assert [r.value for r in records] == [b"before", b"after-0", b"after-1", b"after-2"]
    assert [a.sequence for a in rest] == [2, 3, 4]  # the refused sequence 2 was given again
    assert [a.offset for a in rest] == [r.offset - 77 for r in records[1:]]
    assert stats.failed == 1 and stats.batches_acked == 4
