"""How long to wait before trying again: exponential backoff with full jitter.

Owns the retry schedule only; what is retried, and when to give up, belongs to the callers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt n (0-based): uniform in [0, min(max_s, initial_s * multiplier**n)].

    Full jitter spreads the clients that lost the same broker at the same moment,
    so they do not all reconnect in one burst.
    """

    initial_s: float = 0.05
    max_s: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        cap = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return (rng or random).uniform(0.0, cap)
