"""A request channel to a cluster: one link at a time, re-opened when lost, moved when redirected.

Owns following `NOT_LEADER: redirect to host:port` answers and retrying retryable refusals; one
request's reply is matched by the link, and what a request means is its caller's business.
"""
from __future__ import annotations

import asyncio

from .errors import BrokerError, ConnectionLost, NotLeader
from .link import Link, open_link
from .options import ClientOptions

# Connection losses tolerated for one request before its error is raised.
RETRIES_ON_LOSS = 3


class Session:
    """Requests to one broker endpoint (the leader it was last sent to)."""

    def __init__(self, endpoint: str, options: ClientOptions):
        self.endpoint = endpoint
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
        while True:
            try:
                link = await self.link()
                return await link.request(command, timeout)
            except NotLeader as exc:
                address = exc.address
                if address is None or redirects >= self.options.max_redirects:
                    if attempt >= RETRIES_ON_LOSS:
                        raise
                    attempt += 1
                    await asyncio.sleep(self.options.backoff.delay(attempt))
                    continue
                redirects += 1
                await self.move(address)
            except ConnectionLost:
                if not retry_on_loss or attempt >= RETRIES_ON_LOSS:
                    raise
                attempt += 1
                await asyncio.sleep(self.options.backoff.delay(attempt))
            except BrokerError as exc:
                if not exc.retryable or attempt >= RETRIES_ON_LOSS:
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
