"""What the client raises: refusals from the broker, lost connections, failed deliveries.

Owns the exception classes and the mapping from an ErrorResponse to one of them; nothing here does I/O.
"""
from __future__ import annotations

import re

from lance_store.errors import LanceError

from lance_net.protocol import (
    ACCESS_DENIED, AUTH_REQUIRED, FORWARD_FAILED, INVALID_BATCH, INVALID_OFFSET, NOT_LEADER,
    OFFSET_OUT_OF_RANGE, OUT_OF_ORDER_SEQUENCE, QUORUM_NOT_REACHED, UNKNOWN_TOPIC, ErrorResponse,
)

# Codes after which the same request may succeed if sent again (to the same or another node).
RETRYABLE_CODES = frozenset({NOT_LEADER, FORWARD_FAILED, QUORUM_NOT_REACHED})

_REDIRECT = re.compile(r"redirect to (\S+)")
_LOW_HIGH = re.compile(r"low=(\d+)\s+high=(\d+)")


class ClientError(LanceError):
    """Base of every error the client raises on purpose."""


class ConnectionLost(ClientError):
    """The connection to `endpoint` closed or failed before the reply came."""

    def __init__(self, endpoint: str, cause: BaseException | str | None = None):
        why = f": {cause}" if cause else ""
        super().__init__(f"connection to {endpoint} lost{why}")
        self.endpoint = endpoint
        self.cause = cause


class BrokerError(ClientError):
    """The broker refused a request with an ErrorResponse.

    `code` is the machine-readable prefix (`NOT_LEADER`, `UNKNOWN_TOPIC`, ...) or
    None for plain text, `detail` the rest of the message.
    """

    def __init__(self, message: str, code: str | None = None, detail: str | None = None,
                 *, endpoint: str = ""):
        where = f" (from {endpoint})" if endpoint else ""
        super().__init__(f"{message}{where}")
        self.message = message
        self.code = code
        self.detail = message if detail is None else detail
        self.endpoint = endpoint

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


class NotLeader(BrokerError):
    """The node does not take writes; `address` is the leader's host:port when it named one."""

    @property
    def address(self) -> str | None:
        match = _REDIRECT.search(self.detail)
        return match.group(1) if match else None


class UnknownTopic(BrokerError):
    pass


class AuthError(BrokerError):
    """AUTH_REQUIRED, ACCESS_DENIED, or an Authenticate the broker did not accept."""


class OffsetOutOfRange(BrokerError):
    """A fetch below the low watermark (removed by retention) or past the end."""

    @property
    def low(self) -> int | None:
        match = _LOW_HIGH.search(self.detail)
        return int(match.group(1)) if match else None

    @property
    def high(self) -> int | None:
        match = _LOW_HIGH.search(self.detail)
        return int(match.group(2)) if match else None


class InvalidOffset(BrokerError):
    """A fetch that did not start on a batch boundary."""


class BatchRefused(BrokerError):
    """The broker refused a produced batch (INVALID_BATCH, OUT_OF_ORDER_SEQUENCE, ...)."""


class DeliveryTimeout(ClientError):
    """A batch was not acknowledged within the producer's delivery timeout."""


class UnexpectedReply(ClientError):
    """The broker answered a request with a reply of another kind."""

    def __init__(self, request: str, expected: str, reply):
        super().__init__(f"{request}: expected {expected}, found {type(reply).__name__}")
        self.reply = reply


_BY_CODE = {
    NOT_LEADER: NotLeader,
    UNKNOWN_TOPIC: UnknownTopic,
    AUTH_REQUIRED: AuthError,
    ACCESS_DENIED: AuthError,
    OFFSET_OUT_OF_RANGE: OffsetOutOfRange,
    INVALID_OFFSET: InvalidOffset,
    INVALID_BATCH: BatchRefused,
    OUT_OF_ORDER_SEQUENCE: BatchRefused,
}


def broker_error(reply: ErrorResponse, endpoint: str = "") -> BrokerError:
    """The exception that stands for an ErrorResponse."""
    code = reply.error_code
    cls = _BY_CODE.get(code, BrokerError)
    return cls(reply.message, code, reply.detail, endpoint=endpoint)
