"""Write backends: how a segment's aligned blocks reach the disk.

`select_backend("auto")` prefers io_uring (when its extension is built and the
kernel allows it) and falls back to pwritev + fdatasync, logging which runs.
"""
from __future__ import annotations

import logging

from .backend import WriteBackend
from .pwritev import PwritevBackend

log = logging.getLogger("lance_store.io")

BACKENDS = ("auto", "uring", "pwritev")


def _uring_backend():
    try:
        from .ring import UringBackend  # built only where liburing exists
    except ImportError as exc:  # pragma: no cover - depends on the machine
        return None, f"io_uring extension not available ({exc})"
    try:
        return UringBackend(), None
    except OSError as exc:
        return None, f"io_uring refused by the kernel ({exc})"


def select_backend(name: str = "auto") -> WriteBackend:
    if name not in BACKENDS:
        raise ValueError(f"unknown io backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "pwritev":
        log.info("io backend: pwritev (forced by configuration)")
        return PwritevBackend()
    backend, why = _uring_backend()
    if backend is not None:
        log.info("io backend: io_uring")
        return backend
    if name == "uring":
        raise OSError(f"io backend 'uring' requested but unavailable: {why}")
    log.info("io backend: pwritev (%s)", why)
    return PwritevBackend()


__all__ = ["WriteBackend", "PwritevBackend", "select_backend", "BACKENDS"]
