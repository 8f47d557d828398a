"""A request channel to a cluster: one link at a time, re-opened when lost, moved when redirected.

Owns following `NOT_LEADER: redirect to host:port` answers and retrying retryable refusals; one
request's reply is matched by the link, and what a request means is its caller's business.
"""
from __future__ import annotations

import asyncio

from .errors import BrokerError, ConnectionLost, NotLeader
from .link import Link, open_link
from .options import ClientOptions

# Connection losses (and retryable refusals) tolerated for one request before its error is
# raised, with one node to talk to; with several seeds, retries go on for failover_timeout_s.
RETRIES_ON_LOSS = 3


class Session:
    """Requests to one broker endpoint (the leader it was last sent to).

    `seeds` (default: `endpoint`) are the addresses to fall back on when that node is lost:
    a comma-separated list of a cluster's nodes lets requests find the next leader."""

    def __init__(self, endpoint: str, options: ClientOptions, *, seeds: str | None = None):
        self.endpoint = endpoint
        self.seeds = seeds or endpoint
        self.options = options
        self._link: Link | None = None
        self._connecting: asyncio.Lock | None = None

    async def link(self) -> Link:
        """The open link, connecting (and authenticating) first when there is none."""
        if self._link is not None and self._link.alive:
            return self._link
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._link is None or not self._link.alive:
                self._link = await open_link(self.endpoint, self.options)
        return self._link

    async def request(self, command, *, timeout: float | None = None,
                      retry_on_loss: bool = True):
        """Send `command`, following redirects and retrying lost connections and retryable refusals.

        Returns the reply event; an ErrorResponse raises its BrokerError.
        """
        redirects = 0
        attempt = 0
        clustered = "," in self.seeds
        deadline = asyncio.get_running_loop().time() + self.options.failover_timeout_s

        def give_up() -> bool:
            if clustered:
                return asyncio.get_running_loop().time() >= deadline
            return attempt >= RETRIES_ON_LOSS

        while True:
            try:
                link = await self.link()
                return await link.request(command, timeout)
            except NotLeader as exc:
                address = exc.address
                if address is None or redirects >= self.options.max_redirects:
                    if give_up():
                        raise
                    attempt += 1
                    await asyncio.sleep(self.options.backoff.delay(attempt))
                    continue
                redirects += 1
                await self.move(address)
            except ConnectionLost:
                if not retry_on_loss or give_up():
                    raise
                attempt += 1
                # The node may be gone for good: the next try starts from the seeds.
                await self.move(self.seeds)
                await asyncio.sleep(self.options.backoff.delay(attempt))
            except BrokerError as exc:
                if not exc.retryable or give_up():
                    raise
                attempt += 1
                await asyncio.sleep(self.options.backoff.delay(attempt))

    async def move(self, endpoint: str) -> None:
        """Point the session at another node (the leader named by a redirect)."""
        await self.close()
        self.endpoint = endpoint

    async def close(self, linger_s: float = 0.0) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close(linger_s)
