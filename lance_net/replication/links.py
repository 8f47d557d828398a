"""The data plane on a running node: the leader's stream to one follower, and the stream a
follower takes from its leader.

Owns sockets, the order of messages and their replies, and flow control on both ends; what
is sent is `source`'s, what is written `follower`'s, what counts as committed the leader's
`QuorumTracker`. The node's role (who leads, which stream a follower may take) is the
broker's: it hands each link an object with the attributes and calls named below.

Replies come back one per message, in order, so the leader knows which message each one
answers: the answer to a topic's first message (an empty probe) says where the follower's
log ends after it reconciled, and an OK to a NEW_EPOCH message says the follower recorded
this leader's epoch.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket

from lance_store.eventloop import cancel_and_wait

from .follower import ReplicationError, StaleEpoch
from .source import messages_from
from .wire import (NEED_DATA, NEW_EPOCH, STREAM_CLOSED, Preamble, Replicate,
                   ReplicationProtocolError, ReplicationReceiver, ReplyReceiver, Status,
                   encode_preamble, encode_replicate_header, encode_reply)

log = logging.getLogger("lance_net.replication.links")

# A follower that hears nothing for this long still learns the committed offset.
HEARTBEAT_S = 0.25
RECONNECT_S = 0.3
CONNECT_TIMEOUT_S = 5.0
MESSAGE_BYTES = 1 << 20
# Decoded messages a follower holds before it stops reading the leader's socket.
MAX_QUEUED_BYTES = 16 << 20


class LinkBroken(Exception):
    """The follower answered RESYNC or ERROR, or a reply without a message: start over."""


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class OutboundLink:
    """The leader's stream to follower `node_id`, reconnected until the leadership ends.

    `leading` provides: `node_id`, `epoch`, `stopped` (bool), `topics` (topic id -> an object
    with `topic`, `tracker`, `epochs`, `durable`), `address_of(node_id)` (host, port or None),
    `run_read(fn, *args)` (a reader thread), `confirmed(topic_id)` (a tracker moved).
    """

    def __init__(self, leading, node_id: int):
        self.leading = leading
        self.node_id = node_id
        self.wake = asyncio.Event()
        self.connected = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"link-{self.node_id}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        lead = self.leading
        while not lead.stopped:
            address = lead.address_of(self.node_id)
            if address is None:
                await asyncio.sleep(RECONNECT_S)
                continue
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*address),
                                                        CONNECT_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(RECONNECT_S)
                continue
            _nodelay(writer)
            try:
                await self._session(reader, writer)
            except (OSError, asyncio.TimeoutError, ReplicationProtocolError, LinkBroken) as exc:
                log.info("stream to node %d (%s:%d): %s", self.node_id, *address, exc)
            except Exception:
                log.exception("stream to node %d (%s:%d) failed", self.node_id, *address)
            finally:
                self.connected = False
                writer.close()
            if not lead.stopped:
                await asyncio.sleep(RECONNECT_S)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lead = self.leading
        loop = asyncio.get_running_loop()
        sent: dict[int, int | None] = {}    # topic id -> offset streamed to; None: probing
        told: dict[int, int] = {}           # topic id -> committed offset last sent
        fresh: set[int] = set()             # probed: send the markers even with no new data
        expect: collections.deque = collections.deque()   # (topic id, NEW_EPOCH) per message
        writer.write(encode_preamble(Preamble(lead.node_id, lead.epoch)))
        replies = loop.create_task(self._replies(reader, sent, fresh, expect))
        self.connected = True
        last_beat = loop.time()

        def send(msg: Replicate) -> None:
            expect.append((msg.topic_id, bool(msg.flags & NEW_EPOCH)))
            writer.write(encode_replicate_header(msg))
            if msg.payload:
                writer.write(msg.payload)

        try:
            while not lead.stopped and not replies.done():
                self.wake.clear()
                now = loop.time()
                beat = now - last_beat >= HEARTBEAT_S
                if beat:
                    last_beat = now
                    send(Replicate(lead.epoch, 0, 0, 0, "", 0))   # the stream's pulse
                for topic_id, state in list(lead.topics.items()):
                    committed = state.tracker.committed
                    if topic_id not in sent:
                        # The probe: the follower reconciles, then answers with its end.
                        sent[topic_id] = None
                        told[topic_id] = committed
                        send(Replicate(lead.epoch, committed, topic_id, state.durable, "", 0))
                        continue
                    start = sent[topic_id]
                    if start is None:
                        continue
                    end = state.durable
                    if end > start or topic_id in fresh:
                        fresh.discard(topic_id)
                        messages = await lead.run_read(_messages, state, start, lead.epoch,
                                                       committed, end)
                        for msg in messages:
                            send(msg)
                        sent[topic_id] = max(start, end)
                        told[topic_id] = committed
                    elif committed != told[topic_id] or beat:
                        told[topic_id] = committed
                        send(Replicate(lead.epoch, committed, topic_id, start, "", 0))
                await writer.drain()
                if not self.wake.is_set():
                    try:
                        await asyncio.wait_for(self.wake.wait(), HEARTBEAT_S)
                    except asyncio.TimeoutError:
                        pass
            if replies.done():
                replies.result()
        finally:
            replies.cancel()

    async def _replies(self, reader, sent, fresh, expect) -> None:
        lead = self.leading
        rx = ReplyReceiver()
        while True:
            rx.receive_data(await reader.read(1 << 16))
            while (reply := rx.next_message()) is not NEED_DATA:
                if reply is STREAM_CLOSED:
                    raise LinkBroken("the follower closed the stream")
                if not expect:
                    raise LinkBroken(f"a reply for topic {reply.topic_id} with no message owed")
                topic_id, new_epoch = expect.popleft()
                state = lead.topics.get(topic_id)
                if state is None:
                    continue   # deleted meanwhile
                if reply.status is not Status.OK:
                    raise LinkBroken(f"topic {topic_id}: {reply.status.name} with the follower "
                                     f"at {reply.confirmed_offset}")
                tracker = state.tracker
                if sent.get(topic_id, 0) is None:
                    # Where its log ends after reconciling: confirmations restart from there.
                    tracker.reset_follower(self.node_id, reply.confirmed_offset)
                    sent[topic_id] = reply.confirmed_offset
                    fresh.add(topic_id)
                    self.wake.set()
                tracker.confirm(self.node_id, reply.confirmed_offset)
                if new_epoch:
                    tracker.record_epoch(self.node_id)
                lead.confirmed(topic_id)


def _messages(state, start: int, epoch: int, committed: int, end: int) -> list[Replicate]:
    """The replicate messages from `start` to `end` (on a reader thread: they read the disk)."""
    return list(messages_from(state.topic, start, epoch=epoch, committed=committed,
                              epochs=state.epochs, max_bytes=MESSAGE_BYTES, end=end))


class InboundLink:
    """A stream from a leader, on a connection of the LWP port that began with `LNCR`.

    `role` provides: `accept_stream(link)` (coroutine: True when the preamble's leader is
    the one etcd names; the follower's fencing applies), `prepare_topic(topic_id)`
    (coroutine: the topic exists here and is reconciled with the leader's epochs),
    `run_admin(fn, *args)` (the thread that writes), `follower` (the `Follower`),
    `applied(topic_ids)` (committed offsets may have moved), `dropped(link)`.
    """

    def __init__(self, role, transport: asyncio.Transport, peer: str):
        self.role = role
        self.transport = transport
        self.peer = peer
        self.rx = ReplicationReceiver()
        self.preamble: Preamble | None = None
        self.closed = False
        self.last_message = asyncio.get_running_loop().time()
        self._queue: list[Replicate] = []
        self._queued_bytes = 0
        self._paused = False
        self._eof = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def epoch(self) -> int:
        return self.preamble.epoch if self.preamble else 0

    def receive(self, data) -> None:
        """Bytes from the socket (b"" at its end)."""
        if self.closed:
            return
        try:
            self.rx.receive_data(data)
            while (msg := self.rx.next_message()) is not NEED_DATA:
                if msg is STREAM_CLOSED:
                    self._eof = True
                    break
                if isinstance(msg, Preamble):
                    self.preamble = msg
                    self._task = asyncio.get_running_loop().create_task(self._run())
                    continue
                self._queue.append(msg)
                self._queued_bytes += len(msg.payload)
        except ReplicationProtocolError as exc:
            log.warning("stream from %s: %s", self.peer, exc)
            self.close()
            return
        if not data:
            self._eof = True
        if self._queued_bytes > MAX_QUEUED_BYTES and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake.set()

    async def _run(self) -> None:
        role = self.role
        preamble = self.preamble
        try:
            if not await role.accept_stream(self):
                return
            log.info("following node %d (epoch %d) from %s", preamble.leader_node_id,
                     preamble.epoch, self.peer)
            reconciled: set[int] = set()
            loop = asyncio.get_running_loop()
            while not self.closed:
                if not self._queue:
                    if self._eof:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch, self._queue, self._queued_bytes = self._queue, [], 0
                if self._paused:
                    self._paused = False
                    self.transport.resume_reading()
                for topic_id in sorted({m.topic_id for m in batch} - reconciled):
                    await role.prepare_topic(topic_id)
                    reconciled.add(topic_id)
                if self.closed:
                    return
                replies, error = await role.run_admin(_apply, role.follower, batch)
                if replies and not self.closed:
                    self.transport.writelines([encode_reply(r) for r in replies])
                self.last_message = loop.time()
                role.applied({r.topic_id for r in replies})
                if error is not None:
                    raise error
        except (StaleEpoch, ReplicationError) as exc:
            log.warning("stream from node %d (epoch %d): %s", preamble.leader_node_id,
                        preamble.epoch, exc)
        except Exception:
            log.exception("stream from node %d (epoch %d) failed", preamble.leader_node_id,
                          preamble.epoch)
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        self.transport.close()
        self.role.dropped(self)


def _apply(follower, batch: list[Replicate]):
    """Apply messages in order (on the writing thread); stops at a fenced-off one."""
    replies = []
    try:
        for msg in batch:
            replies.append(follower.apply(msg))
    except StaleEpoch as exc:
        return replies, exc
    return replies, None
