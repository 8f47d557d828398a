"""Bandwidth limits: parsing `--bwlimit` and pacing a byte stream to it.

rsync targets hand the rate to rsync itself; the other targets pace their copy loops here.
"""
from __future__ import annotations

import re
import time

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgKMG]?)(i?[bB]?)?\s*(?:/s)?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_rate(text: str | int | None) -> int | None:
    """Bytes per second from "500K", "20M", "1.5G" or a plain byte count; None or 0 means no limit."""
    if text is None or text == "" or text == 0:
        return None
    if isinstance(text, int):
        return text if text > 0 else None
    m = _RATE.match(str(text))
    if not m:
        raise ValueError(f"bwlimit {text!r}: expected a rate such as 500K, 20M or 1G (bytes per second)")
    rate = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return rate if rate > 0 else None


class Throttle:
    """Sleeps just enough that `consume()`d bytes average at most `rate` per second."""

    def __init__(self, rate: int | None):
        self.rate = rate
        self._start = time.monotonic()
        self._sent = 0

    def consume(self, n: int) -> None:
        if not self.rate:
            return
        self._sent += n
        ahead = self._sent / self.rate - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)
