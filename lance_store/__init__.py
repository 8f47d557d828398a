"""LANCE storage engine: segment files of checksummed TLV batches, and their topics.

The public API: `open()`, `Store`, `Topic`, `SortKey`, `Record`, `StoreConfig`.
"""
from .config import StoreConfig
from .errors import (CorruptionError, LanceError, OffsetError, ReadOnlyError, StoreLockedError,
                     TopicExistsError, UnknownTopicError, WriteFailedError)
from .records import Record
from .sortkey import HybridClock, SortKey
from .store import Store, open
from .topic import AppendResult, BatchSpec, Retention, ScanChunk, Topic

__all__ = [
    "open", "Store", "Topic", "SortKey", "HybridClock", "Record", "StoreConfig", "AppendResult",
    "BatchSpec", "Retention", "ScanChunk", "LanceError", "CorruptionError", "OffsetError",
    "ReadOnlyError", "StoreLockedError", "TopicExistsError", "UnknownTopicError", "WriteFailedError",
]
__version__ = "0.1.0"
