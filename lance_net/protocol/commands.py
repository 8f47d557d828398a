"""What LWP frames mean: one frozen event per data frame and per control command.

Owns each command's code and payload layout (LWP.md sections 2 and 3); framing lives in `frames`.
"""
from __future__ import annotations

import enum
import json
import re
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Union

from .compression import compress_block, decompress_block
from .errors import CompressionError, InvalidBatch
from .frames import DEFAULT_MAX_PAYLOAD_SIZE, Buffer, Payload, payload_buffers

U64_MAX = (1 << 64) - 1


class CommandCode(enum.IntEnum):
    """The batch_id of a control frame (LWP.md section 3)."""

    CREATE_TOPIC = 0x01
    DELETE_TOPIC = 0x02
    LIST_TOPICS = 0x03
    GET_TOPIC = 0x04
    SET_RETENTION = 0x05
    CREATE_TOPIC_WITH_RETENTION = 0x06
    GET_CLUSTER_STATUS = 0x07
    AUTHENTICATE = 0x08
    AUTHENTICATE_RESPONSE = 0x09
    INIT_PRODUCER = 0x0A
    PRODUCER_RESPONSE = 0x0B
    FETCH = 0x10
    FETCH_RESPONSE = 0x11
    CATCHING_UP = 0x12
    LIST_OFFSETS = 0x13
    OFFSETS_RESPONSE = 0x14
    SUBSCRIBE = 0x20
    UNSUBSCRIBE = 0x21
    COMMIT_OFFSET = 0x22
    SUBSCRIBE_ACK = 0x23
    COMMIT_ACK = 0x24
    UNSUBSCRIBE_ACK = 0x25
    TOPIC_RESPONSE = 0x80
    CLUSTER_STATUS_RESPONSE = 0x81
    ERROR_RESPONSE = 0xFF


# ---------------------------------------------------------------- error codes

NOT_LEADER = "NOT_LEADER"
FORWARD_FAILED = "FORWARD_FAILED"
OFFSET_OUT_OF_RANGE = "OFFSET_OUT_OF_RANGE"
INVALID_OFFSET = "INVALID_OFFSET"
OUT_OF_ORDER_SEQUENCE = "OUT_OF_ORDER_SEQUENCE"
AUTH_REQUIRED = "AUTH_REQUIRED"
ACCESS_DENIED = "ACCESS_DENIED"
UNKNOWN_TOPIC = "UNKNOWN_TOPIC"
INVALID_BATCH = "INVALID_BATCH"
QUORUM_NOT_REACHED = "QUORUM_NOT_REACHED"
ERROR_CODES = frozenset({
    NOT_LEADER, FORWARD_FAILED, OFFSET_OUT_OF_RANGE, INVALID_OFFSET, OUT_OF_ORDER_SEQUENCE,
    AUTH_REQUIRED, ACCESS_DENIED, UNKNOWN_TOPIC, INVALID_BATCH, QUORUM_NOT_REACHED,
})
# The exact text upstream answers to a command a server does not take from clients.
INVALID_CLIENT_COMMAND = "Invalid client command"

_CODED = re.compile(r"([A-Z][A-Z0-9_]*):[ ]?(.*)", re.DOTALL)


def parse_error_message(message: str) -> tuple[str | None, str]:
    """Split `CODE: detail` into (code, detail); (None, message) for plain text."""
    match = _CODED.fullmatch(message)
    if match is None:
        return None, message
    return match.group(1), match.group(2)


def error_message(code: str, detail: str) -> str:
    """The machine-readable form `CODE: detail`."""
    return f"{code}: {detail}"


# ---------------------------------------------------------------- data frames

@dataclass(frozen=True, slots=True)
class Ingest:
    """A batch of TLV records for a topic (flags 0x04, +0x01 when `payload` is an LZ4 block).

    `payload` is the frame's payload as it travels; records() gives the TLV bytes.
    """

    topic_id: int
    batch_id: int
    record_count: int
    payload: Payload
    timestamp_ns: int = 0
    compressed: bool = False

    @classmethod
    def compress(cls, *, topic_id: int, batch_id: int, record_count: int, records: Buffer,
                 timestamp_ns: int = 0) -> Ingest:
        return cls(topic_id, batch_id, record_count, compress_block(records), timestamp_ns, True)

    def records(self, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> Buffer:
        """The TLV records, decompressed when needed; InvalidBatch when the block is bad."""
        data = self.payload
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = b"".join(payload_buffers(data))
        if not self.compressed:
            return data
        try:
            return decompress_block(data, max_size)
        except CompressionError as exc:
            raise InvalidBatch(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Ack:
    """The batch with this id is durable (flags 0x08)."""

    batch_id: int


@dataclass(frozen=True, slots=True)
class Backpressure:
    """The server's queues passed their high mark (flags 0x10)."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Liveness only (flags 0x20); a server echoes it at once."""


@dataclass(frozen=True, slots=True)
class InvalidCommand:
    """A control frame this side does not take: unknown code, the peer's own command, or a
    payload that does not parse. A server answers ErrorResponse(INVALID_CLIENT_COMMAND)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class UnsupportedFrame:
    """A data frame this version cannot act on (encrypted, or no kind and no payload)."""

    flags: int
    batch_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the stream between two frames."""


# ---------------------------------------------------------------- control commands
#
# Every command class has `code`, `_encode(self) -> Payload` and
# `_decode(cls, payload: bytes) -> command`. Trailing payload bytes are
# ignored on decode, as upstream does: that is how optional fields such as
# Fetch's max_wait_ms stay compatible.

class _Fixed:
    """A command whose payload is one fixed struct of its fields, in declaration order."""

    __slots__ = ()
    code: ClassVar[CommandCode]
    _layout: ClassVar[struct.Struct]
    _names: ClassVar[tuple[str, ...]]

    def _encode(self) -> bytes:
        values = [getattr(self, name) for name in self._names]
        try:
            return self._layout.pack(*values)
        except struct.error:
            raise _range_error(type(self).__name__, self._names, self._layout, values) from None

    @classmethod
    def _decode(cls, payload: bytes):
        if len(payload) < cls._layout.size:
            raise ValueError(f"{cls.__name__}: expected a payload of {cls._layout.size} bytes, "
                             f"found {len(payload)}")
        return cls(*cls._layout.unpack_from(payload))


_BITS = {"B": 8, "H": 16, "I": 32, "Q": 64}


def _range_error(command: str, names, layout: struct.Struct, values) -> ValueError:
    for name, char, value in zip(names, layout.format.lstrip("<"), values):
        bits = _BITS[char]
        if not isinstance(value, int) or not 0 <= value < 1 << bits:
            return ValueError(f"{command}.{name}: expected an integer in 0..2**{bits}-1, "
                              f"found {value!r}")
    return ValueError(f"{command}: cannot encode {values!r}")


def _fixed(code: CommandCode, fmt: str):
    """Class decorator binding a _Fixed command to its code and layout."""
    def bind(cls):
        cls.code = code
        cls._layout = struct.Struct("<" + fmt)
        cls._names = tuple(f.name for f in fields(cls))
        return cls
    return bind


def _text(payload: Buffer, what: str, errors: str = "strict") -> str:
    try:
        return bytes(payload).decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what}: expected UTF-8, found invalid byte at {exc.start}") from None


def _json_bytes(value: Any) -> bytes:
    # Sorted and compact, so that the same value always encodes to the same bytes.
    return json.dumps(value, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode()


def _json_value(payload: bytes, what: str) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{what}: expected JSON, found {exc}") from None


# Requests (client to server)

@dataclass(frozen=True, slots=True)
class CreateTopic:
    name: str
    code: ClassVar[CommandCode] = CommandCode.CREATE_TOPIC

    def _encode(self) -> bytes:
        return self.name.encode()

    @classmethod
    def _decode(cls, payload: bytes) -> CreateTopic:
        return cls(_text(payload, "CreateTopic.name"))


@_fixed(CommandCode.DELETE_TOPIC, "I")
@dataclass(frozen=True, slots=True)
class DeleteTopic(_Fixed):
    topic_id: int


@dataclass(frozen=True, slots=True)
class ListTopics:
    code: ClassVar[CommandCode] = CommandCode.LIST_TOPICS

    def _encode(self) -> bytes:
        return b""

    @classmethod
    def _decode(cls, payload: bytes) -> ListTopics:
        return cls()


@_fixed(CommandCode.GET_TOPIC, "I")
@dataclass(frozen=True, slots=True)
class GetTopic(_Fixed):
    topic_id: int


@_fixed(CommandCode.SET_RETENTION, "IQQ")
@dataclass(frozen=True, slots=True)
class SetRetention(_Fixed):
    topic_id: int
    max_age_secs: int
    max_bytes: int


_RETENTION = struct.Struct("<QQ")
_U16 = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class CreateTopicWithRetention:
    name: str
    max_age_secs: int
    max_bytes: int
    code: ClassVar[CommandCode] = CommandCode.CREATE_TOPIC_WITH_RETENTION

    def _encode(self) -> bytes:
        name = self.name.encode()
        if len(name) > 0xFFFF:
            raise ValueError(f"CreateTopicWithRetention.name: expected at most 65535 bytes, "
                             f"found {len(name)}")
        values = [self.max_age_secs, self.max_bytes]
        try:
            tail = _RETENTION.pack(*values)
        except struct.error:
            raise _range_error("CreateTopicWithRetention", ("max_age_secs", "max_bytes"),
                               _RETENTION, values) from None
        return _U16.pack(len(name)) + name + tail

    @classmethod
    def _decode(cls, payload: bytes) -> CreateTopicWithRetention:
        if len(payload) < 2:
            raise ValueError(f"CreateTopicWithRetention: expected name_len u16, "
                             f"found {len(payload)} bytes")
        (name_len,) = _U16.unpack_from(payload)
        need = 2 + name_len + _RETENTION.size
        if len(payload) < need:
            raise ValueError(f"CreateTopicWithRetention: expected {need} bytes for a "
                             f"{name_len}-byte name, found {len(payload)}")
        name = _text(payload[2:2 + name_len], "CreateTopicWithRetention.name")
        return cls(name, *_RETENTION.unpack_from(payload, 2 + name_len))


@dataclass(frozen=True, slots=True)
class GetClusterStatus:
    code: ClassVar[CommandCode] = CommandCode.GET_CLUSTER_STATUS

    def _encode(self) -> bytes:
        return b""

    @classmethod
    def _decode(cls, payload: bytes) -> GetClusterStatus:
        return cls()


@dataclass(frozen=True, slots=True)
class Authenticate:
    token: str
    code: ClassVar[CommandCode] = CommandCode.AUTHENTICATE

    def _encode(self) -> bytes:
        return self.token.encode()

    @classmethod
    def _decode(cls, payload: bytes) -> Authenticate:
        return cls(_text(payload, "Authenticate.token"))


@_fixed(CommandCode.INIT_PRODUCER, "QI")
@dataclass(frozen=True, slots=True)
class InitProducer(_Fixed):
    """producer_id 0 asks for a new id."""

    producer_id: int
    topic_id: int


_FETCH = struct.Struct("<IQI")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Fetch:
    """start is a topic byte offset; FETCH_TAIL probes the high watermark.

    max_wait_ms None sends the upstream 16-byte payload; a number adds the wait.
    """

    topic_id: int
    start: int
    max_bytes: int
    max_wait_ms: int | None = None
    code: ClassVar[CommandCode] = CommandCode.FETCH

    def _encode(self) -> bytes:
        values = [self.topic_id, self.start, self.max_bytes]
        names = ("topic_id", "start", "max_bytes")
        layout = _FETCH
        if self.max_wait_ms is not None:
            values.append(self.max_wait_ms)
            names += ("max_wait_ms",)
            layout = _FETCH_WAIT
        try:
            return layout.pack(*values)
        except struct.error:
            raise _range_error("Fetch", names, layout, values) from None

    @classmethod
    def _decode(cls, payload: bytes) -> Fetch:
        if len(payload) < _FETCH.size:
            raise ValueError(f"Fetch: expected a payload of {_FETCH.size} bytes, "
                             f"found {len(payload)}")
        if len(payload) >= _FETCH_WAIT.size:
            return cls(*_FETCH_WAIT.unpack_from(payload))
        return cls(*_FETCH.unpack_from(payload))


_FETCH_WAIT = struct.Struct("<IQII")
FETCH_TAIL = U64_MAX


@_fixed(CommandCode.LIST_OFFSETS, "IQ")
@dataclass(frozen=True, slots=True)
class ListOffsets(_Fixed):
    """timestamp_ns is EARLIEST, LATEST, or a time T: the first batch whose last record is at or
    after T."""

    topic_id: int
    timestamp_ns: int

    EARLIEST: ClassVar[int] = 0
    LATEST: ClassVar[int] = U64_MAX


@_fixed(CommandCode.SUBSCRIBE, "IQIQ")
@dataclass(frozen=True, slots=True)
class Subscribe(_Fixed):
    topic_id: int
    start: int
    max_batch_bytes: int
    consumer_id: int


@_fixed(CommandCode.UNSUBSCRIBE, "IQ")
@dataclass(frozen=True, slots=True)
class Unsubscribe(_Fixed):
    topic_id: int
    consumer_id: int


@_fixed(CommandCode.COMMIT_OFFSET, "IQQ")
@dataclass(frozen=True, slots=True)
class CommitOffset(_Fixed):
    topic_id: int
    consumer_id: int
    offset: int


# Replies (server to client)

@dataclass(frozen=True, slots=True)
class AuthenticateResponse:
    ok: bool
    message: str
    code: ClassVar[CommandCode] = CommandCode.AUTHENTICATE_RESPONSE

    def _encode(self) -> bytes:
        return (b"\x01" if self.ok else b"\x00") + self.message.encode()

    @classmethod
    def _decode(cls, payload: bytes) -> AuthenticateResponse:
        if not payload:
            raise ValueError("AuthenticateResponse: expected ok u8, found an empty payload")
        return cls(payload[0] != 0, _text(payload[1:], "AuthenticateResponse.message", "replace"))


@_fixed(CommandCode.PRODUCER_RESPONSE, "QQ")
@dataclass(frozen=True, slots=True)
class ProducerResponse(_Fixed):
    producer_id: int
    last_seq: int


_FETCH_RESPONSE = struct.Struct("<QII")


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """Whole batches starting at the requested offset.

    `data` may be a list of buffers when sending; a received one is a read-only
    memoryview of the frame's payload. The wire's `bytes` field is the length
    of `data`, so it is not a field here.
    """

    next_offset: int
    record_count: int
    data: Payload = b""
    code: ClassVar[CommandCode] = CommandCode.FETCH_RESPONSE

    def _encode(self) -> list[Buffer]:
        buffers = payload_buffers(self.data)
        size = sum(len(b) if isinstance(b, (bytes, bytearray)) else memoryview(b).nbytes
                   for b in buffers)
        values = [self.next_offset, size, self.record_count]
        try:
            prefix = _FETCH_RESPONSE.pack(*values)
        except struct.error:
            raise _range_error("FetchResponse", ("next_offset", "bytes", "record_count"),
                               _FETCH_RESPONSE, values) from None
        return [prefix, *buffers]

    @classmethod
    def _decode(cls, payload: bytes) -> FetchResponse:
        if len(payload) < _FETCH_RESPONSE.size:
            raise ValueError(f"FetchResponse: expected at least {_FETCH_RESPONSE.size} bytes, "
                             f"found {len(payload)}")
        next_offset, size, record_count = _FETCH_RESPONSE.unpack_from(payload)
        end = _FETCH_RESPONSE.size + size
        if len(payload) < end:
            raise ValueError(f"FetchResponse.bytes: expected at most "
                             f"{len(payload) - _FETCH_RESPONSE.size}, found {size}")
        # A view, not a copy: fetched data is the bulk of what a consumer receives.
        return cls(next_offset, record_count, memoryview(payload)[_FETCH_RESPONSE.size:end])


@_fixed(CommandCode.CATCHING_UP, "Q")
@dataclass(frozen=True, slots=True)
class CatchingUp(_Fixed):
    """The fetch started past the high watermark, which is server_offset."""

    server_offset: int


@_fixed(CommandCode.OFFSETS_RESPONSE, "QQQ")
@dataclass(frozen=True, slots=True)
class OffsetsResponse(_Fixed):
    offset: int
    low: int
    high: int


@_fixed(CommandCode.SUBSCRIBE_ACK, "QQ")
@dataclass(frozen=True, slots=True)
class SubscribeAck(_Fixed):
    consumer_id: int
    start: int


@_fixed(CommandCode.COMMIT_ACK, "QQ")
@dataclass(frozen=True, slots=True)
class CommitAck(_Fixed):
    consumer_id: int
    offset: int


@_fixed(CommandCode.UNSUBSCRIBE_ACK, "Q")
@dataclass(frozen=True, slots=True)
class UnsubscribeAck(_Fixed):
    consumer_id: int


@dataclass(frozen=True, slots=True)
class TopicResponse:
    """A JSON reply: a topic, `{"topics": [...]}` or `{"deleted": id}`."""

    data: Any
    code: ClassVar[CommandCode] = CommandCode.TOPIC_RESPONSE

    def _encode(self) -> bytes:
        return _json_bytes(self.data)

    @classmethod
    def _decode(cls, payload: bytes) -> TopicResponse:
        return cls(_json_value(payload, "TopicResponse"))


@dataclass(frozen=True, slots=True)
class ClusterStatusResponse:
    data: Any
    code: ClassVar[CommandCode] = CommandCode.CLUSTER_STATUS_RESPONSE

    def _encode(self) -> bytes:
        return _json_bytes(self.data)

    @classmethod
    def _decode(cls, payload: bytes) -> ClusterStatusResponse:
        return cls(_json_value(payload, "ClusterStatusResponse"))


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A refusal; batch_id is the refused Ingest's id (sent in the header's timestamp_ns), else 0."""

    message: str
    batch_id: int = 0
    code: ClassVar[CommandCode] = CommandCode.ERROR_RESPONSE

    @classmethod
    def of(cls, error_code: str, detail: str, batch_id: int = 0) -> ErrorResponse:
        return cls(error_message(error_code, detail), batch_id)

    @property
    def error_code(self) -> str | None:
        """The leading `CODE` of a machine-readable message, else None."""
        return parse_error_message(self.message)[0]

    @property
    def detail(self) -> str:
        return parse_error_message(self.message)[1]

    def _encode(self) -> bytes:
        return self.message.encode()

    @classmethod
    def _decode(cls, payload: bytes) -> ErrorResponse:
        return cls(_text(payload, "ErrorResponse.message", "replace"))


REQUESTS = (
    CreateTopic, DeleteTopic, ListTopics, GetTopic, SetRetention, CreateTopicWithRetention,
    GetClusterStatus, Authenticate, InitProducer, Fetch, ListOffsets, Subscribe, Unsubscribe,
    CommitOffset,
)
REPLIES = (
    AuthenticateResponse, ProducerResponse, FetchResponse, CatchingUp, OffsetsResponse,
    SubscribeAck, CommitAck, UnsubscribeAck, TopicResponse, ClusterStatusResponse, ErrorResponse,
)
COMMANDS: dict[int, type] = {cls.code: cls for cls in REQUESTS + REPLIES}
REQUEST_CODES = frozenset(cls.code for cls in REQUESTS)
REPLY_CODES = frozenset(cls.code for cls in REPLIES)

Request = Union[
    CreateTopic, DeleteTopic, ListTopics, GetTopic, SetRetention, CreateTopicWithRetention,
    GetClusterStatus, Authenticate, InitProducer, Fetch, ListOffsets, Subscribe, Unsubscribe,
    CommitOffset,
]
Reply = Union[
    AuthenticateResponse, ProducerResponse, FetchResponse, CatchingUp, OffsetsResponse,
    SubscribeAck, CommitAck, UnsubscribeAck, TopicResponse, ClusterStatusResponse, ErrorResponse,
]
Command = Union[Request, Reply]
Event = Union[Command, Ingest, Ack, Backpressure, Keepalive, InvalidCommand, UnsupportedFrame,
              ConnectionClosed]


def encode_command(command: Command) -> tuple[int, int, Payload]:
    """(command code, header timestamp_ns, payload) of a control frame."""
    timestamp_ns = command.batch_id if type(command) is ErrorResponse else 0
    return command.code, timestamp_ns, command._encode()


def decode_command(code: int, timestamp_ns: int, payload: bytes) -> Command:
    """The command of a control frame; ValueError when the code is unknown or the payload bad."""
    cls = COMMANDS.get(code)
    if cls is None:
        raise ValueError(f"unknown command code 0x{code:02X}")
    if cls is ErrorResponse:
        return ErrorResponse(ErrorResponse._decode(payload).message, timestamp_ns)
    return cls._decode(payload)


def command_name(code: int) -> str:
    cls = COMMANDS.get(code)
    return cls.__name__ if cls is not None else f"0x{code:02X}"
