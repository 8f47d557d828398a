"""The LANCE Wire Protocol, sans-IO: frames, commands and a Connection that turns bytes into events.

Nothing here opens a socket or runs an event loop; the broker, the client, tools and tests drive it.
"""
from .commands import (
    ACCESS_DENIED, AUTH_REQUIRED, ERROR_CODES, FETCH_TAIL, FORWARD_FAILED, INVALID_BATCH,
    INVALID_CLIENT_COMMAND, INVALID_OFFSET, NOT_LEADER, OFFSET_OUT_OF_RANGE,
    OUT_OF_ORDER_SEQUENCE, QUORUM_NOT_REACHED, REPLIES, REQUESTS, UNKNOWN_TOPIC, Ack,
    Authenticate, AuthenticateResponse, Backpressure, CatchingUp, ClusterStatusResponse,
    Command, CommandCode, CommitAck, CommitOffset, ConnectionClosed, CreateTopic,
    CreateTopicWithRetention, DeleteTopic, ErrorResponse, Event, Fetch, FetchResponse,
    GetClusterStatus, GetTopic, Ingest, InitProducer, InvalidCommand, Keepalive, ListOffsets,
    ListTopics, OffsetsResponse, ProducerResponse, Reply, Request, SetRetention, Subscribe,
    SubscribeAck, TopicResponse, Unsubscribe, UnsubscribeAck, UnsupportedFrame, error_message,
    parse_error_message,
)
from .compression import compress_block, decompress_block
from .connection import NEED_DATA, Connection, Role
from .errors import (
    BadMagic, ChecksumMismatch, CompressionError, ConnectionStateError, HeaderChecksumMismatch,
    InvalidBatch, PayloadChecksumMismatch, PayloadTooLarge, ProtocolError, TruncatedFrame,
    UnsupportedVersion,
)
from .frames import DEFAULT_MAX_PAYLOAD_SIZE, HEADER_SIZE, Dialect, FrameKind

# validate_ingest and count_records live in .ingest, which needs lance_store: import them from it.
__all__ = [
    "ACCESS_DENIED", "AUTH_REQUIRED", "Ack", "Authenticate", "AuthenticateResponse",
    "Backpressure", "BadMagic", "CatchingUp", "ChecksumMismatch", "ClusterStatusResponse",
    "Command", "CommandCode", "CommitAck", "CommitOffset", "CompressionError", "Connection",
    "ConnectionClosed", "ConnectionStateError", "CreateTopic", "CreateTopicWithRetention",
    "DEFAULT_MAX_PAYLOAD_SIZE", "DeleteTopic", "Dialect", "ERROR_CODES", "ErrorResponse", "Event",
    "FETCH_TAIL", "FORWARD_FAILED", "Fetch", "FetchResponse", "FrameKind", "GetClusterStatus",
    "GetTopic", "HEADER_SIZE", "HeaderChecksumMismatch", "INVALID_BATCH", "INVALID_CLIENT_COMMAND",
    "INVALID_OFFSET", "Ingest", "InitProducer", "InvalidBatch", "InvalidCommand", "Keepalive",
    "ListOffsets", "ListTopics", "NEED_DATA", "NOT_LEADER", "OFFSET_OUT_OF_RANGE",
    "OUT_OF_ORDER_SEQUENCE", "OffsetsResponse", "PayloadChecksumMismatch", "PayloadTooLarge",
    "ProducerResponse", "ProtocolError", "QUORUM_NOT_REACHED", "REPLIES", "REQUESTS", "Reply",
    "Request", "Role", "SetRetention", "Subscribe", "SubscribeAck", "TopicResponse",
    "TruncatedFrame", "UNKNOWN_TOPIC", "Unsubscribe", "UnsubscribeAck", "UnsupportedFrame",
    "UnsupportedVersion", "compress_block", "decompress_block", "error_message",
    "parse_error_message",
]
