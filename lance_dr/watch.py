"""`ship --watch`: ship again and again as segments seal and batches land, reporting the
recovery point lag after every round.

A failed round (target unreachable, a race with the broker) is reported and retried
on the next round; nothing is published from it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from lance_store import LanceError

from .lag import Lag, lag_behind
from .ship import DEFAULT_KEEP, ShipResult, ship
from .targets.base import Target


@dataclass
class Round:
    number: int
    result: ShipResult | None
    lag: Lag | None
    error: str | None = None

    def as_dict(self) -> dict:
        return {"round": self.number, "ship": self.result.as_dict() if self.result else None,
                "lag": self.lag.as_dict() if self.lag else None, "error": self.error}


def watch(data_dir, target: Target, *, interval: float = 1.0, rounds: int | None = None,
          keep: int = DEFAULT_KEEP, bwlimit: int | None = None,
          on_round: Callable[[Round], None] = lambda r: None) -> int:
    """Ship every `interval` seconds until `rounds` have run (forever when None); returns
    the number of rounds that failed."""
    failures = 0
    number = 0
    manifests: dict = {}     # generations are immutable: read each once
    while rounds is None or number < rounds:
        number += 1
        began = time.monotonic()
        try:
            result = ship(data_dir, target, keep=keep, bwlimit=bwlimit, manifests=manifests)
            lag = lag_behind(data_dir, result.topics, result.snapshot_at_ns)
            on_round(Round(number, result, lag))
        except (LanceError, OSError) as exc:
            failures += 1
            on_round(Round(number, None, None, str(exc)))
        if rounds is None or number < rounds:
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
    return failures
