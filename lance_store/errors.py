"""Exceptions of the storage engine.

Every error names what a user needs to act on: the file, the offset, and what
was expected and found. Nothing here does I/O.
"""
from __future__ import annotations


class LanceError(Exception):
    """Base of every error the storage engine raises on purpose."""


class StoreLockedError(LanceError):
    """Another process holds the data directory open for writing."""


class ReadOnlyError(LanceError):
    """A write was attempted through a read-only handle, or a topic went read-only."""


class TopicExistsError(LanceError):
    pass


class UnknownTopicError(LanceError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown topic"


class InvalidRecordError(LanceError, ValueError):
    """A record a caller handed in cannot be stored (type, size)."""


class OffsetError(LanceError):
    """An offset outside the topic, or not on a batch boundary."""

    def __init__(self, code: str, message: str, *, low: int = 0, high: int = 0):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.low = low
        self.high = high


class CorruptionError(LanceError):
    """Bytes on disk that do not match the format."""

    def __init__(self, path, offset: int, what: str, expected=None, found=None):
        detail = f"{path} at offset {offset}: {what}"
        if expected is not None or found is not None:
            detail += f" (expected {expected}, found {found})"
        super().__init__(detail)
        self.path = str(path)
        self.offset = offset
        self.what = what
        self.expected = expected
        self.found = found


class WriteFailedError(LanceError):
    """The kernel refused a write or a sync; nothing of the batch was acknowledged."""

    def __init__(self, path, offset: int, cause: BaseException):
        super().__init__(f"write to {path} at offset {offset} failed: {cause}")
        self.path = str(path)
        self.offset = offset
        self.cause = cause
