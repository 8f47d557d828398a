"""Handing a frame's buffers ([header, *payload]) to an asyncio transport without joining them.

Python 3.11's `Transport.writelines` joins its list into one new bytes object, a copy of every
payload; from 3.12 it sends the list with sendmsg. Before 3.12 a list holding a large buffer is
written buffer by buffer instead, so a fetch response's megabyte reaches the socket uncopied.
"""
from __future__ import annotations

import sys

# Below this, one joined write (one send) beats a send per buffer.
LARGE = 64 * 1024
_JOINS = sys.version_info < (3, 12)


def write_buffers(transport, buffers: list) -> None:
    if _JOINS and len(buffers) > 1 and any(len(b) >= LARGE for b in buffers):
        for b in buffers:
            transport.write(b)
    else:
        transport.writelines(buffers)
