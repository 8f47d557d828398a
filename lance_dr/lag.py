"""Recovery point lag: how far a shipped copy is behind its data directory, in bytes and seconds.

Reads the source read-only (high watermarks only); never touches a target.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import lance_store

from .manifest import Manifest


@dataclass
class Lag:
    bytes: int
    seconds: float                   # 0 when nothing is behind; else how long ago the copy was whole
    topics: dict[str, int] = field(default_factory=dict)   # bytes behind, per topic

    def as_dict(self) -> dict:
        return asdict(self)


def source_high_watermarks(data_dir) -> dict[str, int]:
    with lance_store.open(data_dir, readonly=True) as store:
        return {t.name: t.high_watermark for t in store.topics()}


def lag_behind(data_dir, shipped: dict[str, int], snapshot_at_ns: int, *, now_ns: int | None = None) -> Lag:
    """What a copy holding `shipped` (end offset per topic, as of `snapshot_at_ns`) lacks
    compared with the data directory now. A topic never shipped lags by all it holds."""
    highs = source_high_watermarks(data_dir)
    behind = {name: max(0, high - shipped.get(name, 0)) for name, high in highs.items()}
    total = sum(behind.values())
    now_ns = time.time_ns() if now_ns is None else now_ns
    seconds = 0.0 if total == 0 else max(0.0, (now_ns - snapshot_at_ns) / 1e9)
    return Lag(total, seconds, behind)


def recovery_point_lag(data_dir, manifest: Manifest, *, now_ns: int | None = None) -> Lag:
    """The lag of one generation: what restoring `manifest` would lose against the source now."""
    shipped = {t.name: t.high for t in manifest.topics}
    return lag_behind(data_dir, shipped, manifest.snapshot_at_ns, now_ns=now_ns)
