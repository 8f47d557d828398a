"""A request the broker turns down: the ErrorResponse text to send, raised from any handler.

Owns nothing but the exception; handlers raise it, the connection answers it.
"""
from __future__ import annotations

from lance_net.protocol import error_message


class Refused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @classmethod
    def of(cls, code: str, detail: str) -> Refused:
        """A machine-readable refusal `CODE: detail` (LWP.md section 3, Errors)."""
        return cls(error_message(code, detail))
