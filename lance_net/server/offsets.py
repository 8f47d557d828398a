"""Committed consumer offsets, durable under `<data_dir>/offsets/<topic>.json`.

Owns those files: one per topic, `{"topic": name, "topic_id": id, "consumers": {"<id>": offset}}`,
replaced atomically (lance_store.fsutil.write_json). Commits that arrive while a file is being
written share the next write, as batches share a group commit.
"""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor

from lance_store import fsutil

log = logging.getLogger("lance_net.server.offsets")

OFFSETS = "offsets"


class _TopicOffsets:
    __slots__ = ("topic_id", "name", "consumers", "waiters", "writing")

    def __init__(self, topic_id: int, name: str, consumers: dict[int, int]):
        self.topic_id = topic_id
        self.name = name
        self.consumers = consumers
        self.waiters: list[asyncio.Future] = []
        self.writing = False


class OffsetBook:
    def __init__(self, data_dir: str, executor: Executor):
        self.folder = os.path.join(data_dir, OFFSETS)
        self._executor = executor
        self._topics: dict[int, _TopicOffsets] = {}

    def load(self, topics) -> list[str]:
        """Read the files of the live topics; returns warnings about files it could not use."""
        warnings = []
        os.makedirs(self.folder, exist_ok=True)
        for topic in topics:
            path = self._path(topic.name)
            try:
                data = fsutil.read_json(path)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                warnings.append(f"{path}: unreadable ({exc}); offsets of {topic.name!r} start empty")
                continue
            if not isinstance(data, dict) or data.get("topic_id") != topic.id:
                # Left by a deleted topic of the same name: not this topic's consumers.
                warnings.append(f"{path}: belongs to topic id {data.get('topic_id')!r} "
                                f"(expected {topic.id}); ignored")
                continue
            consumers = {int(k): int(v) for k, v in (data.get("consumers") or {}).items()}
            self._topics[topic.id] = _TopicOffsets(topic.id, topic.name, consumers)
        return warnings

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, f"{name}.json")

    def committed(self, topic_id: int, consumer_id: int) -> int | None:
        entry = self._topics.get(topic_id)
        return None if entry is None else entry.consumers.get(consumer_id)

    def snapshot(self) -> list[tuple[int, str, int, int]]:
        """(topic_id, topic name, consumer_id, offset) of every committed offset."""
        return [(e.topic_id, e.name, cid, off) for e in self._topics.values()
                for cid, off in e.consumers.items()]

    async def commit(self, topic_id: int, name: str, consumer_id: int, offset: int) -> None:
        """Record the offset; returns once it is on disk."""
        entry = self._topics.get(topic_id)
        if entry is None:
            entry = self._topics[topic_id] = _TopicOffsets(topic_id, name, {})
        entry.consumers[consumer_id] = offset
        future = asyncio.get_running_loop().create_future()
        entry.waiters.append(future)
        if not entry.writing:
            entry.writing = True
            asyncio.get_running_loop().create_task(self._write(entry))
        await future

    async def _write(self, entry: _TopicOffsets) -> None:
        loop = asyncio.get_running_loop()
        try:
            while entry.waiters:
                waiters, entry.waiters = entry.waiters, []
                document = {"topic": entry.name, "topic_id": entry.topic_id,
                            "consumers": {str(k): v for k, v in sorted(entry.consumers.items())}}
                try:
                    await loop.run_in_executor(self._executor, fsutil.write_json,
                                               self._path(entry.name), document)
                except OSError as exc:
                    log.error("offsets of topic %s: %s", entry.name, exc)
                    for future in waiters:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for future in waiters:
                    if not future.done():
                        future.set_result(None)
        finally:
            entry.writing = False

    def forget(self, topic_id: int, name: str) -> None:
        """Drop a deleted topic's offsets (file included)."""
        self._topics.pop(topic_id, None)
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
