"""Where a consumer keeps its committed offset: in memory, in a lock file, or on the broker.

Owns the three offset stores and their one interface; when to commit is the consumer's choice.
A committed offset is where consuming resumes: the start of the first batch not fully processed.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from typing import Protocol

from lance_net.protocol import CommitAck, CommitOffset, Subscribe, SubscribeAck

from .errors import ClientError, UnexpectedReply
from .options import ClientOptions
from .session import Session

# Subscribe with this start asks the broker for the committed offset (its low watermark when none).
RESUME = (1 << 64) - 1


def consumer_id_for(name: str) -> int:
    """A stable 63-bit consumer id for a consumer name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1) or 1


class OffsetStore(Protocol):
    async def load(self, topic_id: int, consumer_id: int) -> int | None:
        """The committed offset, or None when nothing was committed."""

    async def save(self, topic_id: int, consumer_id: int, offset: int) -> None:
        """Make `offset` the committed one; returns once it is durable."""

    async def close(self) -> None: ...


class MemoryOffsetStore:
    """Offsets for the life of the process (tests, or offsets kept with the data elsewhere)."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[int, int], int] = {}

    async def load(self, topic_id: int, consumer_id: int) -> int | None:
        return self.offsets.get((topic_id, consumer_id))

    async def save(self, topic_id: int, consumer_id: int, offset: int) -> None:
        self.offsets[(topic_id, consumer_id)] = offset

    async def close(self) -> None:
        pass


class LockFileOffsetStore:
    """One file per (topic, consumer) holding the offset in decimal, as upstream clients keep it.

    Layout: `<base_dir>/<consumer_name>/topic-<topic id>-consumer-<consumer id>.offset`, written
    through a temporary file, fsynced and renamed, while an exclusive flock is held on the
    `.lock` file beside it, so processes sharing the folder never see a torn offset.
    """

    def __init__(self, base_dir: str | os.PathLike, consumer_name: str):
        if not consumer_name or "/" in consumer_name or consumer_name in (".", ".."):
            raise ValueError(f"consumer_name: expected a file name, found {consumer_name!r}")
        self.folder = os.path.join(os.fspath(base_dir), consumer_name)
        os.makedirs(self.folder, exist_ok=True)

    def path(self, topic_id: int, consumer_id: int) -> str:
        return os.path.join(self.folder, f"topic-{topic_id}-consumer-{consumer_id}.offset")

    def _lock_path(self, topic_id: int, consumer_id: int) -> str:
        return os.path.join(self.folder, f"topic-{topic_id}-consumer-{consumer_id}.lock")

    async def load(self, topic_id: int, consumer_id: int) -> int | None:
        return await asyncio.to_thread(self.read, topic_id, consumer_id)

    async def save(self, topic_id: int, consumer_id: int, offset: int) -> None:
        await asyncio.to_thread(self.write, topic_id, consumer_id, offset)

    def read(self, topic_id: int, consumer_id: int) -> int | None:
        path = self.path(topic_id, consumer_id)
        with self._locked(topic_id, consumer_id):
            try:
                with open(path, encoding="ascii") as f:
                    text = f.read().strip()
            except FileNotFoundError:
                return None
        try:
            return int(text)
        except ValueError:
            raise ClientError(f"{path}: expected a decimal offset, found {text[:40]!r}") from None

    def write(self, topic_id: int, consumer_id: int, offset: int) -> None:
        path = self.path(topic_id, consumer_id)
        temp = path + ".tmp"
        with self._locked(topic_id, consumer_id):
            with open(temp, "w", encoding="ascii") as f:
                f.write(f"{offset}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
            folder = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself must survive a crash
            finally:
                os.close(folder)

    def _locked(self, topic_id: int, consumer_id: int):
        return _FileLock(self._lock_path(topic_id, consumer_id))

    async def close(self) -> None:
        pass


class _FileLock:
    __slots__ = ("path", "fd")

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1


class BrokerOffsetStore:
    """Offsets committed on the broker (Subscribe / CommitOffset), durable in its data directory.

    The broker answers a Subscribe that asks to resume with the committed offset, or with the
    topic's low watermark when the consumer never committed: so load() is never None.
    """

    def __init__(self, endpoint: str, options: ClientOptions | None = None,
                 max_batch_bytes: int = 4 * 1024 * 1024):
        self.session = Session(endpoint, options or ClientOptions())
        self.max_batch_bytes = max_batch_bytes

    async def load(self, topic_id: int, consumer_id: int) -> int | None:
        reply = await self.session.request(
            Subscribe(topic_id, RESUME, self.max_batch_bytes, consumer_id))
        if type(reply) is not SubscribeAck:
            raise UnexpectedReply("Subscribe", "SubscribeAck", reply)
        return reply.start

    async def save(self, topic_id: int, consumer_id: int, offset: int) -> None:
        reply = await self.session.request(CommitOffset(topic_id, consumer_id, offset))
        if type(reply) is not CommitAck:
            raise UnexpectedReply("CommitOffset", "CommitAck", reply)
        if reply.offset != offset:
            raise ClientError(f"CommitOffset: expected the broker to commit offset {offset}, "
                              f"found {reply.offset}")

    async def close(self) -> None:
        await self.session.close()
