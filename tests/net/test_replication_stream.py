"""The data plane over real loopback sockets: a leader streaming to two followers, the commit
index following their replies, losing followers, and a fenced-off stale leader."""
import asyncio

import lance_store
from lance_store import StoreConfig
from lance_net.replication import wire
from lance_net.replication.epochs import EpochsFile
from lance_net.replication.follower import Follower, StaleEpoch
from lance_net.replication.quorum import QuorumTracker
from lance_net.replication.source import messages_from
from lance_net.replication.wire import (NEED_DATA, STREAM_CLOSED, Preamble, ReplicationProtocolError,
                                        ReplicationReceiver, ReplyReceiver, Status)

from .replication_fixtures import replica_files, run

CONFIG = StoreConfig(segment_max_bytes=4096, buffer_count=2, buffer_size=1 << 20)


async def serve_follower(store, node_id):
    """A follower's listener: one Follower applying every stream it is given."""
    follower = Follower(store, node_id)

    async def handle(reader, writer):
        rx = ReplicationReceiver()
        try:
            while True:
                data = await reader.read(65536)
                rx.receive_data(data)
                while (msg := rx.next_message()) is not NEED_DATA:
                    if msg is STREAM_CLOSED:
                        return
                    if isinstance(msg, Preamble):
                        follower.accept_preamble(msg)
                        continue
                    reply = await asyncio.to_thread(follower.apply, msg)
                    writer.write(wire.encode_reply(reply))
                await writer.drain()
        except (StaleEpoch, ReplicationProtocolError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, follower


class Stream:
    """The leader's end of one follower stream, feeding confirmations to the tracker."""

    def __init__(self, reader, writer, tracker, node_id):
        self.writer = writer
        self.replies = []
        self.done = asyncio.create_task(self._read(reader, tracker, node_id))

    @classmethod
    async def open(cls, port, tracker, node_id, epoch):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire.encode_preamble(Preamble(1, epoch)))
        return cls(reader, writer, tracker, node_id)

    async def _read(self, reader, tracker, node_id):
        rx = ReplyReceiver()
        while True:
            data = await reader.read(65536)
            rx.receive_data(data)
            while (reply := rx.next_message()) is not NEED_DATA:
                if reply is STREAM_CLOSED:
                    return
                self.replies.append(reply)
                if reply.status is Status.OK and tracker is not None:
                    tracker.confirm(node_id, reply.confirmed_offset)

    def send(self, messages):
        for msg in messages:
            self.writer.write(wire.encode_replicate_header(msg))
            self.writer.write(msg.payload)


async def until(predicate, timeout=10.0):
    async def wait():
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), timeout)


def test_leader_and_two_followers_over_sockets(tmp_path):
    stores = [lance_store.open(tmp_path / f"n{i}", create=True, config=CONFIG) for i in (1, 2, 3)]
    topics = [s.create_topic("events") for s in stores]
    leader_topic = topics[0]

    async def main():
        servers = [await serve_follower(stores[i], i + 1) for i in (1, 2)]
        epoch = 11
        epochs = EpochsFile(leader_topic.folder)
        epochs.append(epoch, 0)
        tracker = QuorumTracker(1, [1, 2, 3], epoch_start=0)
        streams = [await Stream.open(srv.sockets[0].getsockname()[1], tracker, n, epoch)
                   for (srv, _), n in zip(servers, (2, 3))]
        high = 0
        for group in range(8):
            results = leader_topic.append_many([[b"g%d-%d" % (group, i) * 20] for i in range(5)])
            tracker.leader_wrote(leader_topic.high_watermark)
            for s in streams:
                s.send(messages_from(leader_topic, high, epoch=epoch, committed=tracker.committed,
                                     epochs=epochs, end=leader_topic.high_watermark, max_bytes=2048))
            high = leader_topic.high_watermark
            await until(lambda: tracker.acknowledgeable(results[-1].next_offset))
        # every follower has replied for the last write (a reply follows the whole apply, seal included)
        await until(lambda: all(s.replies and s.replies[-1].confirmed_offset == high for s in streams))
        assert all(t.high_watermark == high for t in topics)
        assert replica_files(topics[1]) == replica_files(leader_topic)
        assert replica_files(topics[2]) == replica_files(leader_topic)

        # One follower goes: the leader and the other still make a majority.
        servers[1][0].close()
        streams[1].writer.close()
        await streams[1].done
        results = leader_topic.append_many([[b"after-one"]])
        tracker.leader_wrote(leader_topic.high_watermark)
        streams[0].send(messages_from(leader_topic, high, epoch=epoch, committed=tracker.committed,
                                      epochs=epochs))
        high = leader_topic.high_watermark
        await until(lambda: tracker.acknowledgeable(results[-1].next_offset))

        # The second goes too: nothing more can be committed.
        servers[0][0].close()
        streams[0].writer.close()
        await streams[0].done
        before = tracker.committed
        leader_topic.append_many([[b"alone"]])
        assert tracker.leader_wrote(leader_topic.high_watermark) == before
        assert not tracker.acknowledgeable(leader_topic.high_watermark)

    try:
        run(main())
    finally:
        for s in stores:
            s.close()


def test_a_stale_leader_is_cut_off(tmp_path):
    leader_store = lance_store.open(tmp_path / "old", create=True, config=CONFIG)
    follower_store = lance_store.open(tmp_path / "f", create=True, config=CONFIG)
    old, ft = leader_store.create_topic("t"), follower_store.create_topic("t")
    old.append_many([[b"x" * 100] for _ in range(3)])

    async def main():
        server, follower = await serve_follower(follower_store, 2)
        port = server.sockets[0].getsockname()[1]
        follower.observe_epoch(20, "a newer leader's stream")
        stream = await Stream.open(port, None, 2, epoch=19)
        stream.send(messages_from(old, 0, epoch=19, committed=0))
        await asyncio.wait_for(stream.done, 10)     # closed by the follower, no reply
        assert stream.replies == [] and ft.high_watermark == 0
        stream.writer.close()
        fresh = await Stream.open(port, None, 2, epoch=21)
        fresh.send(messages_from(old, 0, epoch=21, committed=0))
        await until(lambda: fresh.replies)              # a reply follows the durable write
        assert [r.status for r in fresh.replies] == [Status.OK]
        assert fresh.replies[0].confirmed_offset == ft.high_watermark == old.high_watermark
        fresh.writer.close()
        server.close()

    try:
        run(main())
    finally:
        leader_store.close()
        follower_store.close()
