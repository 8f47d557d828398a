"""Loopback ports for the test servers a process starts (brokers, etcd, rsync, S3).

A port is found free by binding port 0, then let go for the server to bind; the kernel may
hand the same number out again right away, so this module never returns one twice.
"""
from __future__ import annotations

import socket
import threading

_given: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port free now and not returned before by this process."""
    with _lock:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _given:
                _given.add(port)
                return port
