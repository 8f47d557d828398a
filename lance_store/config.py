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
    # Group buffers: a group (one write, one sync) is at most buffer_size. Every
    # sync costs the disk a cache flush, so larger groups write faster when the
    # queue is deep (measured: 4 -> 8 MiB took append_async from about 0.9 to 1.0 of
    # dd); io_uring pins the pool, buffer_count x buffer_size of memory.
    buffer_count: int = 4
    buffer_size: int = 8 << 20

    def __post_init__(self):
        if self.durability not in DURABILITY_MODES:
            raise ValueError(
                f"durability {self.durability!r}: choose one of {', '.join(DURABILITY_MODES)}"
            )
        if self.segment_max_bytes < 4096:
            raise ValueError(f"segment_max_bytes {self.segment_max_bytes} is below 4096")
        if self.index_interval_bytes <= 0:
            raise ValueError("index_interval_bytes must be positive")
        if self.buffer_count < 2:
            raise ValueError(f"buffer_count {self.buffer_count}: at least 2 (one fills while"
                             " one is written)")
        if self.buffer_size < 8192 or self.buffer_size % 4096:
            # At least the rewritten tail block and one block of new data.
            raise ValueError(f"buffer_size {self.buffer_size}: a multiple of 4096, at least"
                             " 8192")
