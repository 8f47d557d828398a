"""An etcd lease kept alive, and the rule for when its holder may still act on it.

Owns the keepalive loop and `valid()`; the keys attached to the lease belong to `coordinator`.

The rule (LWP.md section 5): a node acknowledges writes only while
`now < sent + TTL - margin`, where `sent` is when the last successful keepalive was
*sent* (etcd extended the lease no earlier than that, so its expiry is at least
`sent + TTL`), all on the monotonic clock, with a margin of at least 500 ms for clock
rate differences and scheduling delays.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from lance_store.eventloop import cancel_and_wait

from .etcd import EtcdClient, EtcdError, LeaseNotFound

log = logging.getLogger("lance_net.replication.lease")

MIN_MARGIN = 0.5


class Lease:
    """A lease granted by etcd and renewed every TTL/3 by `run()` (or `start()`)."""

    def __init__(self, client: EtcdClient, ttl: int, *, margin: float = MIN_MARGIN,
                 clock: Callable[[], float] = time.monotonic):
        if margin < MIN_MARGIN:
            raise ValueError(f"lease margin: expected at least {MIN_MARGIN} s, found {margin}")
        if ttl <= margin:
            raise ValueError(f"lease ttl: expected more than the margin ({margin} s), found {ttl}")
        self.client = client
        self.requested_ttl = int(ttl)
        self.ttl = int(ttl)
        self.margin = margin
        self.clock = clock
        self.id = 0
        self.last_renewed = float("-inf")   # send time of the last successful grant or keepalive
        self.lost = asyncio.Event()          # set once etcd said the lease is gone
        self.last_error: Exception | None = None
        self._task: asyncio.Task | None = None

    async def grant(self) -> int:
        sent = self.clock()
        self.id, self.ttl = await self.client.lease_grant(self.requested_ttl)
        if self.ttl <= self.margin:
            raise ValueError(f"lease {self.id:x}: etcd granted a TTL of {self.ttl} s, "
                             f"not more than the margin {self.margin} s")
        self.last_renewed = sent
        self.lost.clear()
        return self.id

    @property
    def deadline(self) -> float:
        """Monotonic time after which the holder must act as if the lease were gone."""
        if self.lost.is_set():
            return float("-inf")
        return self.last_renewed + self.ttl - self.margin

    def valid(self, now: float | None = None) -> bool:
        return (self.clock() if now is None else now) < self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    async def keepalive(self) -> bool:
        """One renewal; True when etcd extended the lease. Sets `lost` when it no longer exists."""
        sent = self.clock()
        try:
            ttl = await self.client.lease_keepalive(self.id)
        except LeaseNotFound as exc:
            self.last_error = exc
            self.lost.set()
            return False
        except EtcdError as exc:
            self.last_error = exc
            return False
        self.ttl = ttl
        self.last_renewed = max(self.last_renewed, sent)
        return True

    async def run(self) -> None:
        """Renew every TTL/3 until cancelled or the lease is lost.

        A failed renewal is retried sooner; validity runs out by itself if none succeeds.
        """
        while not self.lost.is_set():
            ok = await self.keepalive()
            if self.lost.is_set():
                log.warning("lease %x is gone: %s", self.id, self.last_error)
                return
            if not ok:
                log.warning("lease %x keepalive failed: %s", self.id, self.last_error)
            await asyncio.sleep(self.ttl / 3 if ok else min(0.25, self.ttl / 10))

    def start(self) -> asyncio.Task:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"lease-{self.id:x}")
        return self._task

    async def stop(self) -> None:
        """Stop renewing (the lease then expires on its own unless revoked)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def revoke(self) -> None:
        """Stop renewing and delete the lease with every key attached to it."""
        await self.stop()
        if self.id and not self.lost.is_set():
            try:
                await self.client.lease_revoke(self.id)
            except LeaseNotFound:
                pass
        self.lost.set()
