"""One client connection: socket bytes into the sans-IO protocol, events to handlers, replies out.

Owns the transport, flow control and the two ordered reply streams of a connection; what each
command does lives in `produce`, `consume` and `admin`.

Ordering: acks and refusals of Ingest frames leave in the order the frames
came; replies to control commands leave in the order the commands came. The two
streams are independent, so a long-polling Fetch never holds an Ack back.
Commands that change what later frames mean (InitProducer, topic admin) are
barriers: frames after one are not read until it is answered. Frames also wait
unread while MAX_PENDING_REPLIES replies are owed or the peer is not reading.

In L3 a connection whose first bytes are the replication preamble (`LNCR`) is a leader's
stream: its bytes go to the cluster role's inbound link from then on. Writes (Ingest,
InitProducer, topic changes) on a node that may not take them are refused with the
cluster's answer (`NOT_LEADER: redirect to host:port`, ...).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING

from lance_net.protocol import (
    ACCESS_DENIED, AUTH_REQUIRED, INVALID_CLIENT_COMMAND, NEED_DATA, Ack, Authenticate,
    Backpressure, BadMagic, Connection, ConnectionClosed, CreateTopic, CreateTopicWithRetention,
    DeleteTopic, ErrorResponse, Ingest, InitProducer, InvalidCommand, Keepalive, ProtocolError,
    Role, SetRetention, UnsupportedFrame, error_message,
)
from lance_net.replication.wire import MAGIC as REPLICATION_MAGIC
from lance_net.writes import write_buffers

from . import admin, consume, produce
from .auth import OPEN, Grant
from .ordering import OrderedReplies, Slot
from .refusal import Refused

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("lance_net.server.connection")

HANDLERS = {**admin.HANDLERS, **consume.HANDLERS, **produce.HANDLERS}
# Commands only the cluster's leader takes (L3).
LEADER_ONLY = frozenset({InitProducer, CreateTopic, CreateTopicWithRetention, DeleteTopic,
                         SetRetention})
_KEEPALIVE = Keepalive()
_BACKPRESSURE = Backpressure()
_WRITING = "writing"      # the peer does not read our replies fast enough
_DRAIN = "drain"          # the node is shutting down
_FAILED = "failed"        # a framing fault: the stream can no longer be read
# Control requests of one connection being answered at once. Past this, and while the
# peer is not reading its replies, no further frame is taken from the buffer: what a
# client can make the node hold in memory stays bounded.
MAX_PENDING_REPLIES = 32


class ClientConnection(asyncio.BufferedProtocol):
    def __init__(self, broker: Broker):
        self.broker = broker
        self.lwp = Connection(Role.SERVER, max_payload_size=broker.options.max_payload_size)
        self._sender = self.lwp   # encodes replies; replaced after a framing fault (see _fail)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.grant: Grant | None = None if broker.tokens.enabled else OPEN
        self.producer_ids: dict[int, int] = {}                 # topic id -> producer id
        self.subscriptions: dict[tuple[int, int], int] = {}    # (topic id, consumer) -> max bytes
        self._loop = asyncio.get_running_loop()
        self.acks = OrderedReplies(self._write, self._loop.call_soon)
        self.replies = OrderedReplies(self._write, self._loop.call_soon)
        self.last_frame = 0.0
        self.closed = False
        self._barrier = False
        self._stalled = False           # frames were left in the buffer because _held
        self._close_when_done = False   # the peer closed its side, or the stream broke
        self._eof = False               # the peer sent FIN: never resume reading
        self._failed = False
        self._pauses: set = set()
        self._reading_paused = False
        self._tasks: set[asyncio.Task] = set()
        self._replication = None        # L3: the inbound link once this is a leader's stream

    # -- asyncio protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.last_frame = self._loop.time()
        broker = self.broker
        metrics = broker.metrics
        if not broker.accepting or len(broker.connections) >= broker.options.max_connections:
            metrics.connections_refused.inc()
            self.closed = True
            transport.abort()
            return
        broker.connections.add(self)
        metrics.connections_accepted.inc()
        metrics.connections.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._replication is not None:
            self._replication.close()
        if self in self.broker.connections:
            self.broker.connections.discard(self)
            self.broker.metrics.connections.dec()
        self.closed = True
        self.acks.clear()
        self.replies.clear()
        for task in list(self._tasks):
            task.cancel()

    def get_buffer(self, sizehint: int) -> memoryview:
        # One buffer shared by every connection: its bytes are copied into this
        # connection's protocol buffer before the loop reads another socket.
        return self.broker.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._replication is not None:
            self._replication.receive(self.broker.read_buffer[:nbytes])   # copied by its buffer
            return
        if self.closed or self._failed:
            return
        try:
            self.lwp.receive_data(self.broker.read_buffer[:nbytes])
        except ProtocolError as exc:
            self._fail(exc)
            return
        if self.lwp.dialect is None and self.broker.cluster is not None and \
                self.lwp.trailing_data[:4] == REPLICATION_MAGIC:
            # The 15-byte preamble is shorter than an LWP header: tell it by its magic now.
            self._become_replication_stream()
            return
        self._pump()

    def eof_received(self) -> bool:
        if self._replication is not None:
            self._replication.receive(b"")
            return False
        self._close_when_done = True
        self._eof = True
        if not self.closed and not self._failed:
            try:
                self.lwp.receive_data(b"")
            except ProtocolError as exc:
                self._fail(exc)
            else:
                self._pump()
        # Keep our side open until the replies still owed have been written.
        return True

    def pause_writing(self) -> None:
        self._pause(_WRITING)

    def resume_writing(self) -> None:
        self._resume(_WRITING)
        self._unstall()

    # -- frames in ----------------------------------------------------------------------

    @property
    def _held(self) -> bool:
        """Whether frames stay unread in the buffer for now (see MAX_PENDING_REPLIES)."""
        return (self._barrier or len(self.replies) >= MAX_PENDING_REPLIES
                or _WRITING in self._pauses)

    def _pump(self) -> None:
        lwp = self.lwp
        while not self.closed and not self._failed:
            if self._held:
                self._stalled = True
                return
            try:
                event = lwp.next_event()
            except ProtocolError as exc:
                self._fail(exc)
                return
            if event is NEED_DATA:
                return
            if type(event) is ConnectionClosed:
                # The peer's FIN: the protocol reports it again on every call, so
                # stop here; the connection closes once its owed replies are out.
                self._finish_if_done()
                return
            self.last_frame = self._loop.time()
            try:
                self._dispatch(event)
            except Exception:  # a fault of ours: this connection's state is unknown now
                log.exception("%s: closing after an internal error on %s", self.peer,
                              type(event).__name__)
                self.close()
                return

    def _dispatch(self, event) -> None:
        kind = type(event)
        cluster = self.broker.cluster
        if kind is Ingest:
            if cluster is not None and (refusal := cluster.write_refusal()) is not None:
                self.acks.send(self._sender.send_buffers(ErrorResponse(refusal, event.batch_id)))
                return
            produce.ingest(self, event, time.perf_counter())
            return
        if kind is Keepalive:
            self._write(self._sender.send_buffers(_KEEPALIVE))
            return
        if kind is InvalidCommand:
            self.broker.metrics.invalid_commands.inc()
            log.debug("%s: invalid command 0x%02X: %s", self.peer, event.code, event.reason)
            self.reply(ErrorResponse(INVALID_CLIENT_COMMAND))
            return
        if kind is UnsupportedFrame:
            produce.unsupported(self, event)
            return
        entry = HANDLERS.get(kind)
        if entry is None:
            # Data frames only a server sends (Ack, Backpressure): nothing to answer.
            log.debug("%s: ignored %s from a client", self.peer, kind.__name__)
            return
        handler, barrier = entry
        if self.grant is None and kind is not Authenticate:
            self.reply(ErrorResponse(error_message(
                AUTH_REQUIRED, f"send Authenticate before {kind.__name__}")))
            return
        if kind in LEADER_ONLY and cluster is not None and \
                (refusal := cluster.write_refusal()) is not None:
            self.reply(ErrorResponse(refusal))
            return
        try:
            result = handler(self, event)
        except Refused as refusal:
            self.reply(ErrorResponse(refusal.message))
            return
        except Exception as exc:  # a store failure must not take the connection down
            log.exception("%s: %s failed", self.peer, kind.__name__)
            self.reply(ErrorResponse(f"request failed: {exc}"))
            return
        if not inspect.isawaitable(result):
            self.reply(result)
            return
        slot = self.replies.reserve()
        if barrier:
            self._barrier = True
        self.spawn(self._answer(slot, result, barrier))

    async def _answer(self, slot: Slot, pending, barrier: bool) -> None:
        try:
            try:
                reply = await pending
            except Refused as refusal:
                reply = ErrorResponse(refusal.message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store failure must not take the connection down
                log.exception("%s: request failed", self.peer)
                reply = ErrorResponse(f"request failed: {exc}")
            if not self.closed:
                try:
                    buffers = self._sender.send_buffers(reply)
                except ValueError as exc:  # a reply over max_payload_size
                    buffers = self._sender.send_buffers(ErrorResponse(f"reply not sent: {exc}"))
                self.replies.fill(slot, buffers)
        finally:
            if barrier and not self.closed and not self._failed:
                self._barrier = False
                self._pump()

    def spawn(self, coroutine) -> asyncio.Task:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def require(self, topic, access: str) -> None:
        """Refused(ACCESS_DENIED) unless this connection's token may `access` the topic."""
        if not self.grant.allows(topic.name, access):
            raise Refused.of(ACCESS_DENIED, f"token {self.grant.name!r} may not {access} "
                                            f"topic {topic.name!r}")

    # -- frames out ---------------------------------------------------------------------

    def reply(self, event) -> None:
        """A control reply that is ready now (it still waits for earlier replies)."""
        if not self.closed:
            self.replies.send(self._sender.send_buffers(event))

    def encode(self, event) -> list:
        return self._sender.send_buffers(event)

    def _write(self, buffers: list) -> None:
        if self.closed:
            return
        write_buffers(self.transport, buffers)
        if self._close_when_done:
            self._finish_if_done()
        else:
            self._unstall()

    def _unstall(self) -> None:
        """Take frames from the buffer again, on the next loop turn, once no longer held."""
        if self._stalled and not self._held and not self.closed:
            self._stalled = False
            self._loop.call_soon(self._pump)

    def settle_ack(self, slot: Slot, batch_id: int, received: float, ticket) -> None:
        """Fill an Ingest's place in the ack stream once its batch is durable or refused."""
        if self.closed:
            return
        if ticket.error is None:
            self.acks.fill(slot, self._sender.send_buffers(Ack(batch_id)))
            self.broker.metrics.ack_latency_seconds.observe(time.perf_counter() - received)
        else:
            self.acks.fill(slot, self._sender.send_buffers(ErrorResponse(ticket.error, batch_id)))

    def backpressure(self, committer) -> None:
        """The topic's queue passed its high mark: tell the client and stop reading from it."""
        if committer in self._pauses:
            return
        self.broker.metrics.backpressure_events.inc()
        self._write(self._sender.send_buffers(_BACKPRESSURE))
        committer.hold(self)
        self._pause(committer)

    def release_backpressure(self, committer) -> None:
        self._resume(committer)

    # -- flow control and closing -------------------------------------------------------

    def _pause(self, reason) -> None:
        self._pauses.add(reason)
        self._update_reading()

    def _resume(self, reason) -> None:
        self._pauses.discard(reason)
        self._update_reading()

    def _update_reading(self) -> None:
        paused = bool(self._pauses)
        if paused == self._reading_paused or self.closed or self._eof:
            # After EOF there is nothing to read: resuming would only report the
            # EOF again, over and over, and spin the event loop.
            return
        self._reading_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    @property
    def owes_replies(self) -> bool:
        return bool(self.acks) or bool(self.replies) or self._barrier

    @property
    def settled(self) -> bool:
        """Nothing owed and nothing left unsent (for the drain)."""
        return self.closed or (not self.owes_replies
                               and self.transport.get_write_buffer_size() == 0)

    def begin_drain(self) -> None:
        self._pause(_DRAIN)

    def _finish_if_done(self) -> None:
        if not self.owes_replies and not self.closed:
            self.close()

    def _fail(self, exc: ProtocolError) -> None:
        """A framing fault: nothing more is read or answered, but the acks of batches
        received before it still go out (they tell the client what is durable)."""
        if self._failed or self._replication is not None:
            return
        if isinstance(exc, BadMagic) and exc.found == REPLICATION_MAGIC and \
                self.broker.cluster is not None:
            self._become_replication_stream()
            return
        self._failed = True
        self.broker.metrics.protocol_errors.labels(exc.reason).inc()
        log.info("%s: closing: %s", self.peer, exc)
        self._pause(_FAILED)
        if self.lwp.dialect is not None:
            # The protocol connection sends nothing once failed; acks still owed are
            # encoded by a fresh one in the same dialect.
            self._sender = Connection(Role.SERVER, self.lwp.dialect,
                                      max_payload_size=self.lwp.max_payload_size)
        self.replies.clear()
        self._barrier = False
        for task in list(self._tasks):
            task.cancel()
        self._close_when_done = True
        self._finish_if_done()

    def _become_replication_stream(self) -> None:
        """A leader's stream: no longer a client (not counted, never closed as idle)."""
        broker = self.broker
        if self in broker.connections:
            broker.connections.discard(self)
            broker.metrics.connections.dec()
        self._replication = broker.cluster.inbound_link(self.transport, self.peer)
        self._replication.receive(self.lwp.trailing_data)

    def close(self) -> None:
        """Close after writing what is already buffered; replies still owed are dropped."""
        if self.closed:
            return
        self.closed = True
        self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
