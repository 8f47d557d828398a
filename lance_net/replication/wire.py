"""The L3 replication data plane on the wire (LWP.md section 5), sans-IO.

Owns the bytes of the preamble, the replicate message and the follower reply, and two
stream decoders (one per direction); it never opens a socket or touches a data directory.

Rules:
1. A leader's stream starts with the 15-byte preamble `LNCR | version u8 | leader_node_id
   u16 | epoch u64`; then come replicate messages, each `length u32` + body.
2. A follower's stream back is replies only, each `length u32` + 23-byte body.
3. Anything that does not match (magic, version, a length that disagrees with the fields,
   unknown flags, non-zero reserved bytes, a bad segment name, a payload CRC mismatch,
   positions that do not add up, a stream ending inside a message) raises
   ReplicationProtocolError naming the field; the stream is then dead and every later
   call raises the same error.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import crc32c

from lance_store.segment import naming

from ..protocol.buffer import StreamInput

MAGIC = b"LNCR"
VERSION = 1

ROTATE_AFTER = 0x01
NEW_SEGMENT = 0x02
NEW_EPOCH = 0x04
KNOWN_FLAGS = ROTATE_AFTER | NEW_SEGMENT | NEW_EPOCH

# A replicated write is one group commit of whole batches: allow several largest batches.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
MAX_NAME_LENGTH = 255

_PREAMBLE = struct.Struct("<4sBHQ")
_LENGTH = struct.Struct("<I")
_HEAD = struct.Struct("<QQIQH")          # epoch, committed_offset, topic_id, global_offset, name_len
_TAIL = struct.Struct("<QB3sQII")        # write_offset, flags, reserved, sealed_t1_ns, payload_length, payload_crc
_REPLY = struct.Struct("<QIQBH")         # epoch, topic_id, confirmed_offset, status, node_id

PREAMBLE_SIZE = _PREAMBLE.size           # 15
MESSAGE_OVERHEAD = _HEAD.size + _TAIL.size   # 58: body bytes besides the name and payload
REPLY_SIZE = _REPLY.size                 # 23


class ReplicationProtocolError(Exception):
    """The peer broke the replication stream; it must be closed.

    `field` names what was wrong and `offset` is the stream position of the message.
    """

    def __init__(self, field: str, expected, found, *, offset: int = 0):
        super().__init__(f"replication stream: {field}: expected {expected}, found {found} "
                         f"(message at stream byte {offset})")
        self.field = field
        self.expected = expected
        self.found = found
        self.offset = offset


class Status(enum.IntEnum):
    OK = 0
    ERROR = 1
    RESYNC = 2   # the follower's log is not where the leader writes: it needs a resync


@dataclass(frozen=True, slots=True)
class Preamble:
    leader_node_id: int
    epoch: int
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Replicate:
    """One write of the leader's log, or a heartbeat when the payload is empty."""

    epoch: int
    committed_offset: int
    topic_id: int
    global_offset: int         # topic offset just after this write
    segment_name: str          # file name of the segment written ("" for a heartbeat)
    write_offset: int          # position inside that segment where the payload goes
    payload: bytes = b""
    flags: int = 0
    sealed_t1_ns: int = 0

    @property
    def start_offset(self) -> int:
        """Topic offset of the payload's first byte."""
        return self.global_offset - len(self.payload)

    @property
    def rotate_after(self) -> bool:
        return bool(self.flags & ROTATE_AFTER)

    @property
    def new_segment(self) -> bool:
        return bool(self.flags & NEW_SEGMENT)

    @property
    def new_epoch(self) -> bool:
        return bool(self.flags & NEW_EPOCH)

    @property
    def is_heartbeat(self) -> bool:
        return not self.payload and not self.flags


@dataclass(frozen=True, slots=True)
class FollowerReply:
    epoch: int
    topic_id: int
    confirmed_offset: int
    status: Status
    node_id: int


class _StreamClosed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "STREAM_CLOSED"


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""next_message() returns this when the buffered bytes hold no whole message yet."""
STREAM_CLOSED = _StreamClosed()
"""next_message() returns this after the peer closed its side between two messages."""


# -- encoding ---------------------------------------------------------------------------------

def encode_preamble(preamble: Preamble) -> bytes:
    return _PREAMBLE.pack(MAGIC, preamble.version, preamble.leader_node_id, preamble.epoch)


def encode_replicate_header(msg: Replicate) -> bytes:
    """Everything of the message before its payload: send it, then the payload, without a copy."""
    name = msg.segment_name.encode("ascii")
    length = MESSAGE_OVERHEAD + len(name) + len(msg.payload)
    return b"".join((
        _LENGTH.pack(length),
        _HEAD.pack(msg.epoch, msg.committed_offset, msg.topic_id, msg.global_offset, len(name)),
        name,
        _TAIL.pack(msg.write_offset, msg.flags, b"\0\0\0", msg.sealed_t1_ns, len(msg.payload),
                   crc32c.crc32c(msg.payload)),
    ))


def encode_replicate(msg: Replicate) -> bytes:
    return encode_replicate_header(msg) + bytes(msg.payload)


def encode_reply(reply: FollowerReply) -> bytes:
    return _LENGTH.pack(REPLY_SIZE) + _REPLY.pack(reply.epoch, reply.topic_id, reply.confirmed_offset,
                                                  int(reply.status), reply.node_id)


# -- decoding ---------------------------------------------------------------------------------

class _Decoder(StreamInput):
    """Stream handling (buffer, end of stream, sticky error) plus this format's failures."""

    def _fail(self, field: str, expected, found) -> ReplicationProtocolError:
        self._error = ReplicationProtocolError(field, expected, found, offset=self._buffer.consumed)
        return self._error

    def next_message(self):
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except struct.error as exc:  # cannot happen with checked lengths; kept fatal all the same
            raise self._fail("message", "well-formed fields", str(exc)) from None

    def _end_or_need(self, have: int, need: int):
        if self._eof:
            if have == 0:
                return STREAM_CLOSED
            raise self._fail("stream", f"{need} bytes of the message", f"{have} before the end")
        return NEED_DATA

    def _framed(self, max_length: int) -> bytes | _NeedData | _StreamClosed:
        """The body of the next length-prefixed message, consumed from the buffer."""
        have = len(self._buffer)
        if have < _LENGTH.size:
            return self._end_or_need(have, _LENGTH.size)
        (length,) = _LENGTH.unpack(self._buffer.copy(0, _LENGTH.size))
        if length > max_length:
            raise self._fail("length", f"at most {max_length}", length)
        if have < _LENGTH.size + length:
            return self._end_or_need(have, _LENGTH.size + length)
        body = self._buffer.copy(_LENGTH.size, length)
        return body

    def _next(self):
        raise NotImplementedError


class ReplicationReceiver(_Decoder):
    """The follower's end of a leader's stream: Preamble first, then Replicate messages."""

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        super().__init__()
        self.max_message_size = max_message_size
        self.preamble: Preamble | None = None

    def _next(self):
        if self.preamble is None:
            return self._next_preamble()
        body = self._framed(self.max_message_size)
        if not isinstance(body, bytes):
            return body
        msg = self._parse(body)
        self._buffer.consume(_LENGTH.size + len(body))
        return msg

    def _next_preamble(self):
        have = len(self._buffer)
        if have >= len(MAGIC) and self._buffer.copy(0, len(MAGIC)) != MAGIC:
            raise self._fail("magic", MAGIC, self._buffer.copy(0, len(MAGIC)))
        if have < PREAMBLE_SIZE:
            return self._end_or_need(have, PREAMBLE_SIZE)
        _, version, node_id, epoch = _PREAMBLE.unpack(self._buffer.copy(0, PREAMBLE_SIZE))
        if version != VERSION:
            raise self._fail("version", VERSION, version)
        self._buffer.consume(PREAMBLE_SIZE)
        self.preamble = Preamble(node_id, epoch, version)
        return self.preamble

    def _parse(self, body: bytes) -> Replicate:
        if len(body) < MESSAGE_OVERHEAD:
            raise self._fail("length", f"at least {MESSAGE_OVERHEAD}", len(body))
        epoch, committed, topic_id, global_offset, name_len = _HEAD.unpack_from(body, 0)
        if name_len > MAX_NAME_LENGTH:
            raise self._fail("name_len", f"at most {MAX_NAME_LENGTH}", name_len)
        tail_at = _HEAD.size + name_len
        if len(body) < tail_at + _TAIL.size:
            raise self._fail("length", f"at least {tail_at + _TAIL.size} for name_len {name_len}",
                             len(body))
        write_offset, flags, reserved, t1, payload_length, payload_crc = _TAIL.unpack_from(body, tail_at)
        expected_length = MESSAGE_OVERHEAD + name_len + payload_length
        if len(body) != expected_length:
            raise self._fail("length", f"{expected_length} (58 + name_len {name_len} + "
                             f"payload_length {payload_length})", len(body))
        if flags & ~KNOWN_FLAGS:
            raise self._fail("flags", f"only bits 0x{KNOWN_FLAGS:02x}", f"0x{flags:02x}")
        if reserved != b"\0\0\0":
            raise self._fail("reserved", "zero bytes", reserved.hex())
        try:
            name = body[_HEAD.size:tail_at].decode("ascii")
        except UnicodeDecodeError:
            raise self._fail("segment_name", "an ASCII segment file name",
                             body[_HEAD.size:tail_at][:40]) from None
        payload = body[tail_at + _TAIL.size:]
        crc = crc32c.crc32c(payload)
        if crc != payload_crc:
            raise self._fail("payload_crc", f"0x{crc:08X}", f"0x{payload_crc:08X}")
        if global_offset < payload_length:
            raise self._fail("global_offset", f"at least payload_length {payload_length}", global_offset)
        if name:
            parsed = naming.parse(name)
            if parsed is None or parsed.legacy or parsed.sealed:
                raise self._fail("segment_name", "an active segment name <base:20>_<t0>.lnc", repr(name))
            start = global_offset - payload_length
            if parsed.base + write_offset != start:
                raise self._fail("write_offset", f"{start - parsed.base} (global_offset - payload_length "
                                 f"- segment base {parsed.base})", write_offset)
            if flags & ROTATE_AFTER and t1 <= parsed.t0:
                raise self._fail("sealed_t1_ns", f"after the segment's t0 {parsed.t0}", t1)
        elif flags or payload_length:
            raise self._fail("name_len", "a segment name for a write, a seal or a new segment", 0)
        return Replicate(epoch, committed, topic_id, global_offset, name, write_offset, payload,
                         flags, t1)


class ReplyReceiver(_Decoder):
    """The leader's end of a follower's stream: FollowerReply messages."""

    def _next(self):
        body = self._framed(REPLY_SIZE)
        if not isinstance(body, bytes):
            return body
        if len(body) != REPLY_SIZE:
            raise self._fail("length", REPLY_SIZE, len(body))
        epoch, topic_id, confirmed, status, node_id = _REPLY.unpack(body)
        try:
            status = Status(status)
        except ValueError:
            raise self._fail("status", "0, 1 or 2", status) from None
        self._buffer.consume(_LENGTH.size + REPLY_SIZE)
        return FollowerReply(epoch, topic_id, confirmed, status, node_id)
