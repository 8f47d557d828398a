"""Which event loop LANCE's own entry points run on (uvloop when installed, else asyncio's),
and ending a background task on it.

Owns that choice (LANCE_NO_UVLOOP=1 forces asyncio's loop) for the CLIs, the benchmarks and the
client's blocking wrappers; applications using the asyncio APIs bring their own loop.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    if os.environ.get("LANCE_NO_UVLOOP", "") not in ("", "0"):
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Awaitable[Any]) -> Any:
    """asyncio.run(main) on the preferred loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has ended (its cancellation is not an error)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
