"""The storage engine's settings (the `[io]` section of lance.toml).

Defaults here are the documented ones; the CLIs fill this from the one config file.
"""
from __future__ import annotations

from dataclasses import dataclass

DURABILITY_MODES = ("sync", "wal", "async")


@dataclass(frozen=True)
class StoreConfig:
    backend: str = "auto"                 # auto | uring | pwritev
    durability: str = "sync"              # sync | wal | async
    segment_max_bytes: int = 256 << 20
    index_interval_bytes: int = 4096
    sync_interval_ms: int = 100           # async mode only
    buffer_count: int = 4
    buffer_size: int = 4 << 20

    def __post_init__(self):
        if self.durability not in DURABILITY_MODES:
            raise ValueError(
                f"durability {self.durability!r}: choose one of {', '.join(DURABILITY_MODES)}"
            )
        if self.segment_max_bytes < 4096:
            raise ValueError(f"segment_max_bytes {self.segment_max_bytes} is below 4096")
        if self.index_interval_bytes <= 0:
            raise ValueError("index_interval_bytes must be positive")
