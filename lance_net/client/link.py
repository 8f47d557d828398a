"""One client connection to a broker: a socket (TCP or TLS) driven through the sans-IO protocol.

Owns the transport, the FIFO of control requests awaiting replies, and the hand-off of data-plane
events (acks, backpressure, refused batches) to a listener; it never retries or redirects.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from lance_net.protocol import (
    NEED_DATA, Ack, Authenticate, AuthenticateResponse, Backpressure, Connection,
    ConnectionClosed, ErrorResponse, Ingest, InvalidCommand, Keepalive, ProtocolError, Role,
    UnsupportedFrame,
)
from lance_net.writes import write_buffers

from .errors import AuthError, ConnectionLost, broker_error
from .options import ClientOptions, parse_endpoint


# Bytes offered to each socket read.
READ_SIZE = 1 << 20


class DataListener(Protocol):
    """What a producer hears from its link; called on the event loop, must not block."""

    def on_ack(self, batch_id: int) -> None: ...

    def on_backpressure(self) -> None: ...

    def on_refused(self, reply: ErrorResponse) -> None: ...

    def on_lost(self, link: Link, error: BaseException) -> None: ...


class Link(asyncio.BufferedProtocol):
    """An open connection. Control requests are answered in the order they were sent."""

    def __init__(self, endpoint: str, options: ClientOptions):
        self.endpoint = endpoint
        self.options = options
        self.listener: DataListener | None = None
        self._conn = Connection(Role.CLIENT, dialect=options.protocol_dialect)
        self._transport: asyncio.Transport | None = None
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._error: BaseException | None = None
        self._settled: asyncio.Event | None = None  # set when no reply is owed (during close)

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        # Fetch responses are large: the socket reads straight into the
        # connection's receive buffer, a megabyte at a time.
        return self._conn.receive_buffer(max(sizehint, READ_SIZE))

    def buffer_updated(self, nbytes: int) -> None:
        conn = self._conn
        try:
            conn.received(nbytes)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    return
                self._dispatch(event)
        except ProtocolError as exc:
            self._fail(ConnectionLost(self.endpoint, exc))
            self._transport.abort()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost reports it

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(ConnectionLost(self.endpoint, exc or "closed by the broker"))

    # ------------------------------------------------------------ events

    def _dispatch(self, event) -> None:
        kind = type(event)
        if kind is Ack:
            if self.listener is not None:
                self.listener.on_ack(event.batch_id)
            return
        if kind is Backpressure:
            if self.listener is not None:
                self.listener.on_backpressure()
            return
        if kind is Keepalive:
            return
        if kind is ConnectionClosed:
            self._fail(ConnectionLost(self.endpoint, "closed by the broker"))
            return
        if kind is InvalidCommand or kind is UnsupportedFrame:
            # The broker sent something this version cannot read; the stream is still in
            # step, but a reply may be lost, so the connection is not trusted any more.
            self._fail(ConnectionLost(self.endpoint, f"unexpected frame: {event}"))
            self._transport.abort()
            return
        if kind is ErrorResponse and self.listener is not None and (
                event.batch_id or not self._waiters):
            # A refused Ingest names its batch; an error nobody asked for is the producer's.
            self.listener.on_refused(event)
            return
        if not self._waiters:
            self._fail(ConnectionLost(self.endpoint, f"reply without a request: {event}"))
            self._transport.abort()
            return
        waiter = self._waiters.popleft()
        if not waiter.done():
            waiter.set_result(event)
        if not self._waiters and self._settled is not None:
            self._settled.set()

    def _fail(self, error: BaseException) -> None:
        if self._error is not None:
            return
        self._error = error
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self._settled is not None:
            self._settled.set()
        if self.listener is not None:
            self.listener.on_lost(self, error)

    # ------------------------------------------------------------ sending

    @property
    def error(self) -> BaseException | None:
        """Why the link died, or None while it is usable."""
        return self._error

    @property
    def alive(self) -> bool:
        return self._error is None

    def send_many(self, frames: list[Ingest]) -> None:
        """Write Ingest frames in one writev-style call, without copying their payloads.

        Nothing waits for the socket to drain: the producer's window bounds what is buffered.
        """
        if self._error is not None:
            raise self._error
        send_buffers = self._conn.send_buffers
        buffers = []
        for ingest in frames:
            buffers.extend(send_buffers(ingest))
        write_buffers(self._transport, buffers)

    def request_nowait(self, command) -> asyncio.Future:
        """Send a control request; the future resolves with the raw reply event."""
        if self._error is not None:
            raise self._error
        waiter = asyncio.get_running_loop().create_future()
        write_buffers(self._transport, self._conn.send_buffers(command))
        self._waiters.append(waiter)
        return waiter

    async def request(self, command, timeout: float | None = None):
        """Send a control request and return its reply; an ErrorResponse raises a BrokerError."""
        waiter = self.request_nowait(command)
        timeout = self.options.request_timeout_s if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            # The reply may still come and would be matched to the next request: close.
            self.abort(ConnectionLost(self.endpoint, f"no reply to {type(command).__name__} "
                                                     f"within {timeout} s"))
            raise self._error from None
        if type(reply) is ErrorResponse:
            raise broker_error(reply, self.endpoint)
        return reply

    def abort(self, error: BaseException | None = None) -> None:
        self._fail(error or ConnectionLost(self.endpoint, "closed by the client"))
        if self._transport is not None:
            self._transport.abort()

    async def close(self, linger_s: float = 0.0) -> None:
        """Close, first waiting up to `linger_s` for replies still owed (a parked long-poll),
        so that the broker never writes to a connection the client already closed."""
        if self._transport is None:
            return
        if linger_s > 0 and self._waiters and self._error is None:
            # Cancelled requests stay in the FIFO until their reply comes, so count, not futures.
            self._settled = asyncio.Event()
            try:
                await asyncio.wait_for(self._settled.wait(), linger_s)
            except asyncio.TimeoutError:
                pass
        self._fail(ConnectionLost(self.endpoint, "closed by the client"))
        self._transport.close()


async def open_link(endpoint: str, options: ClientOptions) -> Link:
    """Connect (TLS when options.ssl is set) and authenticate when options.token is set.

    `endpoint` may list several nodes, comma-separated (a cluster's seeds): they are tried in
    order and the first that accepts the connection is used."""
    addresses = [a.strip() for a in endpoint.split(",") if a.strip()]
    if len(addresses) <= 1:
        return await _open_one(endpoint.strip(" ,"), options)
    failures = []
    for address in addresses:
        try:
            return await _open_one(address, options)
        except ConnectionLost as exc:
            failures.append(str(exc))
    raise ConnectionLost(endpoint, "no node answered: " + "; ".join(failures))


async def _open_one(endpoint: str, options: ClientOptions) -> Link:
    host, port = parse_endpoint(endpoint)
    loop = asyncio.get_running_loop()
    extra = {}
    if options.ssl is not None:
        extra = {"ssl": options.ssl, "server_hostname": options.server_hostname or host}
    try:
        _, link = await asyncio.wait_for(
            loop.create_connection(lambda: Link(endpoint, options), host, port, **extra),
            options.connect_timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ConnectionLost(endpoint, str(exc) or "connect timed out") from None
    if options.token:
        try:
            reply = await link.request(Authenticate(options.token))
        except BaseException:
            link.abort()
            raise
        if type(reply) is not AuthenticateResponse or not reply.ok:
            link.abort()
            message = getattr(reply, "message", "") or "token refused"
            raise AuthError(f"Authenticate: {message}", endpoint=endpoint)
    return link
