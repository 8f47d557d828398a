"""The LANCE client: Producer, Consumer and Admin on asyncio, with blocking twins in `.sync`.

Import from here; modules below are the client's own layout and may move.
"""
from .admin import Admin, TopicRef
from .consumer import EARLIEST, LATEST, Consumer
from .errors import (
    AuthError, BatchRefused, BrokerError, ClientError, ConnectionLost, DeliveryTimeout,
    InvalidOffset, NotLeader, OffsetOutOfRange, UnknownTopic,
)
from .fetched import RecordBatch
from .offsets import BrokerOffsetStore, LockFileOffsetStore, MemoryOffsetStore, OffsetStore
from .options import DEFAULT_ENDPOINT, ClientOptions, tls_context
from .producer import (
    BatchAck, BatchDelivery, BufferFull, Delivered, Delivery, Producer, ProducerClosed,
    ProducerStats,
)
from .backoff import Backoff

__all__ = [
    "Admin", "AuthError", "Backoff", "BatchAck", "BatchDelivery", "BatchRefused", "BrokerError",
    "BrokerOffsetStore", "BufferFull", "ClientError", "ClientOptions", "ConnectionLost",
    "Consumer", "DEFAULT_ENDPOINT", "Delivered", "Delivery", "DeliveryTimeout", "EARLIEST",
    "InvalidOffset", "LATEST", "LockFileOffsetStore", "MemoryOffsetStore", "NotLeader",
    "OffsetOutOfRange", "OffsetStore", "Producer", "ProducerClosed", "ProducerStats",
    "RecordBatch", "TopicRef", "UnknownTopic", "tls_context",
]
