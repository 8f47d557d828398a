"""DR targets: one module per kind (local folder, rsync, fsspec object stores) and the
registry that picks one from a URL.

`open_target(url)` is the entry point; config names are resolved in `lance_dr.config`.
"""
from __future__ import annotations

from .base import Target, Upload
from .local import LocalTarget
from .objectstore import FsspecTarget
from .rsync import RsyncTarget, is_rsync_url


def kind_of(url: str) -> str:
    """Which backend serves a URL: "rsync", "local" or "fsspec"."""
    if is_rsync_url(url):
        return "rsync"
    if url.startswith("file://") or "://" not in url:
        return "local"
    return "fsspec"


def open_target(url: str, options: dict | None = None) -> Target:
    """A Target for `rsync://host[:port]/module/path`, `host:/path` (ssh), a plain path or
    `file://`, or any other fsspec URL (`s3://`, `memory://`, ...); `options` are the
    backend's settings (fsspec storage options, or `timeout`, `args` and `fsync` for rsync)."""
    options = dict(options or {})
    kind = kind_of(url)
    if kind == "rsync":
        return RsyncTarget(url, timeout=int(options.pop("timeout", 60)),
                           extra_args=options.pop("args", ()), fsync=bool(options.pop("fsync", True)))
    if kind == "local":
        return LocalTarget(url)
    return FsspecTarget(url, options)


__all__ = ["Target", "Upload", "LocalTarget", "FsspecTarget", "RsyncTarget", "open_target", "kind_of"]
