"""Fetches parked at a topic's high watermark until it advances (Fetch `max_wait_ms`).

Owns the waiting, not the reading: the fetch handler reads again once woken.
"""
from __future__ import annotations

import asyncio


class Watermarks:
    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Future]] = {}
        self.closing = False

    async def wait(self, topic_id: int, timeout: float) -> None:
        """Return when the topic's high watermark advances, the wait ends, or the node drains."""
        if self.closing:
            return
        future = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(topic_id, set())
        waiters.add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            waiters.discard(future)
            if not waiters and self._waiters.get(topic_id) is waiters:
                del self._waiters[topic_id]

    def advanced(self, topic_id: int) -> None:
        waiters = self._waiters.pop(topic_id, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    def wake_all(self) -> None:
        """The node is draining: every parked fetch answers with what it has now."""
        self.closing = True
        for topic_id in list(self._waiters):
            self.advanced(topic_id)
