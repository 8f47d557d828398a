"""The sans-IO LWP connection: bytes in, events out; events in, bytes out.

Owns the receive buffer, the checksum dialect and the life of one connection; never a socket.

The rules
---------
1. A client sends in the dialect it was given (CRC-32C when none) from its first
   byte, and requires the same dialect of everything it receives.
2. A server given no dialect learns it from the header CRC of the first frame it
   receives: a header matching either algorithm is accepted, and from then on
   only that algorithm is, in both directions. Until then it cannot send.
3. Bad magic, an unknown version, a header or payload checksum mismatch, a
   payload_length above max_payload_size (checked as soon as the header is in),
   or a stream that ends inside a frame raise a ProtocolError. The connection
   is then dead: every later receive_data()/next_event() raises the same error,
   and send() refuses.
4. A control frame whose code is unknown, is not one the peer's role sends, or
   whose payload does not parse, becomes an InvalidCommand event: the stream is
   still in step, so the connection stays open and a server answers it with
   ErrorResponse("Invalid client command").
5. A side sends only what its role sends: a client requests, Ingest and
   Keepalive; a server replies, Ack, Backpressure and Keepalive.
6. receive_data(b"") means the peer closed its side. Between two frames this is
   the ConnectionClosed event; inside a frame it is a TruncatedFrame error.
"""
from __future__ import annotations

import enum
from typing import Callable

from .commands import (
    REPLIES, REPLY_CODES, REQUEST_CODES, REQUESTS, Ack, Backpressure, ConnectionClosed, Event,
    Ingest, InvalidCommand, Keepalive, UnsupportedFrame, command_name, decode_command,
    encode_command,
)
from .buffer import StreamInput
from .compression import decompress_block
from .errors import (
    CompressionError, ConnectionStateError, PayloadChecksumMismatch, PayloadTooLarge,
    ProtocolError, TruncatedFrame,
)
from .frames import (
    DEFAULT_MAX_PAYLOAD_SIZE, FLAG_ACK, FLAG_BACKPRESSURE, FLAG_COMPRESSED, FLAG_CONTROL,
    FLAG_ENCRYPTED, FLAG_INGEST, FLAG_KEEPALIVE, HEADER_SIZE, Buffer, Dialect, FrameHeader,
    FrameKind, encode_frame_buffers, parse_header,
)

class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""next_event() returns this when the buffered bytes hold no whole frame yet."""

_SENDS = {
    Role.CLIENT: frozenset(REQUESTS + (Ingest, Keepalive)),
    Role.SERVER: frozenset(REPLIES + (Ack, Backpressure, Keepalive)),
}


class Connection(StreamInput):
    """One end of an LWP connection, driven by whoever owns the socket."""

    after_eof_error = ConnectionStateError

    def __init__(self, role: Role, dialect: Dialect | None = None,
                 max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE):
        self.role = role
        self.max_payload_size = max_payload_size
        if dialect is None and role is Role.CLIENT:
            dialect = Dialect.CRC32C
        self._dialect = dialect
        self._checksum: Callable[..., int] | None = dialect.checksum if dialect else None
        self._accepts = REQUEST_CODES if role is Role.SERVER else REPLY_CODES
        self._peer = "client" if role is Role.SERVER else "server"
        self._sends = _SENDS[role]
        StreamInput.__init__(self)
        self._header: FrameHeader | None = None  # checked header of the frame being received

    # ------------------------------------------------------------ state

    @property
    def dialect(self) -> Dialect | None:
        """The connection's dialect; None on a server until the first frame's header is in."""
        return self._dialect

    @property
    def trailing_data(self) -> bytes:
        """Received bytes not yet turned into events (after a BadMagic: the peer's whole stream)."""
        return self._buffer.tail()

    # ------------------------------------------------------------ receiving

    def next_event(self) -> Event | _NeedData:
        """The next event in the received bytes, or NEED_DATA; ProtocolError when fatal."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except ProtocolError as exc:
            self._error = exc
            self._header = None
            raise

    def _next_event(self) -> Event | _NeedData:
        buffer = self._buffer
        available = len(buffer)
        header = self._header
        if header is None:
            if available < HEADER_SIZE:
                return self._short(available, HEADER_SIZE)
            header, dialect = parse_header(buffer.data, buffer.start, self._dialect,
                                           stream_offset=buffer.consumed)
            if header.payload_length > self.max_payload_size:
                raise PayloadTooLarge(header.payload_length, self.max_payload_size,
                                      offset=buffer.consumed)
            if self._dialect is None:
                self._dialect = dialect
                self._checksum = dialect.checksum
            self._header = header
        length = header.payload_length
        if available < HEADER_SIZE + length:
            return self._short(available, HEADER_SIZE + length)
        payload = buffer.copy(HEADER_SIZE, length) if length else b""
        crc = self._checksum(payload)
        if crc != header.payload_crc:
            raise PayloadChecksumMismatch(
                "payload_crc", f"0x{crc:08X} ({self._dialect.value})", header.payload_crc,
                offset=buffer.consumed)
        self._header = None
        buffer.consume(HEADER_SIZE + length)
        return self._event(header, payload)

    def _short(self, available: int, need: int) -> Event | _NeedData:
        if not self._eof:
            return NEED_DATA
        if available == 0:
            return ConnectionClosed()
        raise TruncatedFrame(available, need, offset=self._buffer.consumed)

    def _event(self, header: FrameHeader, payload: bytes) -> Event:
        kind = header.kind
        if kind is FrameKind.CONTROL:
            return self._command(header, payload)
        if kind is FrameKind.INGEST:
            if header.flags & FLAG_ENCRYPTED:
                return UnsupportedFrame(header.flags, header.batch_id,
                                        "encrypted payloads (flag 0x02) are not supported")
            return Ingest(header.topic_id, header.batch_id, header.record_count, payload,
                          header.timestamp_ns, bool(header.flags & FLAG_COMPRESSED))
        if kind is FrameKind.ACK:
            return Ack(header.batch_id)
        if kind is FrameKind.KEEPALIVE:
            return Keepalive()
        if kind is FrameKind.BACKPRESSURE:
            return Backpressure()
        return UnsupportedFrame(header.flags, header.batch_id,
                                "no kind flag and no payload")

    def _command(self, header: FrameHeader, payload: bytes) -> Event:
        code = header.batch_id
        if code not in self._accepts:
            if code in REQUEST_CODES or code in REPLY_CODES:
                reason = f"{command_name(code)} (0x{code:02X}) is not sent by a {self._peer}"
            else:
                reason = f"unknown command code 0x{code:02X}"
            return InvalidCommand(code, reason)
        try:
            if header.flags & FLAG_COMPRESSED:
                payload = decompress_block(payload, self.max_payload_size)
            return decode_command(code, header.timestamp_ns, payload)
        except (CompressionError, ValueError) as exc:
            return InvalidCommand(code, str(exc))

    # ------------------------------------------------------------ sending

    def send(self, event: Event) -> bytes:
        """The bytes of one frame carrying `event`."""
        return b"".join(self.send_buffers(event))

    def send_buffers(self, event: Event) -> list[Buffer]:
        """One frame as [header, *payload buffers], for writelines()/sendmsg() without a copy."""
        if self._error is not None:
            raise ConnectionStateError(f"send() on a failed connection: {self._error}")
        dialect = self._dialect
        if dialect is None:
            raise ConnectionStateError(
                "send() before the dialect is known: a server learns it from the first frame")
        kind = type(event)
        if kind not in self._sends:
            raise ConnectionStateError(f"a {self.role.value} does not send {kind.__name__}")
        if kind is Ack:
            return encode_frame_buffers(dialect, FLAG_ACK, batch_id=event.batch_id)
        if kind is Ingest:
            flags = FLAG_INGEST | (FLAG_COMPRESSED if event.compressed else 0)
            frame = encode_frame_buffers(
                dialect, flags, event.payload, batch_id=event.batch_id,
                timestamp_ns=event.timestamp_ns, record_count=event.record_count,
                topic_id=event.topic_id)
        elif kind is Keepalive:
            return encode_frame_buffers(dialect, FLAG_KEEPALIVE)
        elif kind is Backpressure:
            return encode_frame_buffers(dialect, FLAG_BACKPRESSURE)
        else:
            code, timestamp_ns, payload = encode_command(event)
            frame = encode_frame_buffers(dialect, FLAG_CONTROL, payload, batch_id=code,
                                         timestamp_ns=timestamp_ns)
        length = int.from_bytes(frame[0][32:36], "little")
        if length > self.max_payload_size:
            raise ValueError(f"payload_length: expected at most {self.max_payload_size} "
                             f"(max_payload_size), found {length}")
        return frame
