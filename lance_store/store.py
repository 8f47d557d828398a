"""A data directory: node.json, the writer's lock, and the topics in it.

`open()` is the entry point; topics and their segments belong to
`lance_store.topic`, recovery of each folder to `lance_store.recovery`.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import threading
import time
import uuid

from . import fsutil
from .config import StoreConfig
from .pipeline import Completions
from .errors import LanceError, ReadOnlyError, StoreLockedError, TopicExistsError, UnknownTopicError
from .sortkey import HybridClock
from .topic import METADATA, Retention, Topic
from .uring import select_backend
from .uring.backend import BufferPool

log = logging.getLogger("lance_store")

FORMAT_VERSION = 1
NODE_FILE = "node.json"
LOCK_FILE = ".lock"
SEGMENTS = "segments"
WAL_DIR = "wal"
TOPIC_NAME = re.compile(r"^[A-Za-z0-9-]{1,255}$")


def check_topic_name(name: str) -> None:
    if not isinstance(name, str) or not TOPIC_NAME.match(name):
        raise ValueError(f"invalid topic name {name!r}: use 1 to 255 of A-Z, a-z, 0-9 and '-'")


class DirectoryLock:
    """flock(LOCK_EX) on `<data_dir>/.lock`: one writable opener at a time.

    The holder's pid is written into the file so the error can name it.
    """

    def __init__(self, path: str):
        self.path = path
        lock_path = os.path.join(path, LOCK_FILE)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreLockedError(
                    f"{path} is open for writing by another process"
                    + (f" (pid {holder})" if holder else "")
                    + "; stop it, or open with readonly=True") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the fd drops the flock
            self._fd = -1


def find_data_dir(path) -> str | None:
    """The data directory containing PATH (a dir with node.json), or None."""
    root = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(root, NODE_FILE)):
            return root
        parent = os.path.dirname(root)
        if parent == root:
            return None
        root = parent


class Store:
    """An open data directory. Use `lance_store.open()`."""

    def __init__(self, path, *, create: bool = False, readonly: bool = False, node_id: int = 0,
                 config: StoreConfig | None = None):
        self.path = os.path.abspath(os.fspath(path))
        self.readonly = readonly
        self.config = config or StoreConfig()
        self._lock = threading.RLock()
        self._dir_lock: DirectoryLock | None = None
        self._topics: dict[str, Topic] = {}
        self.warnings: list[str] = []
        self.legacy = False
        self.backend = None
        self.pool = None
        self.completions = None
        self.wal = None
        self._syncer: threading.Thread | None = None
        self._stop_syncer = threading.Event()
        node_path = os.path.join(self.path, NODE_FILE)

        if not os.path.isdir(self.path):
            if not create or readonly:
                raise LanceError(f"{self.path}: no such data directory"
                                 + ("" if readonly else " (pass create=True to make one)"))
            os.makedirs(self.path)
        has_node = os.path.exists(node_path)
        upstream = not has_node and os.path.isdir(os.path.join(self.path, SEGMENTS)) and bool(
            os.listdir(os.path.join(self.path, SEGMENTS)))
        if upstream and not readonly:
            # Refused before the lock is taken: an upstream directory is never written, not even .lock.
            raise ReadOnlyError(f"{self.path}: has segments but no {NODE_FILE} (an upstream "
                                "data directory); open it with readonly=True")
        if not readonly and (has_node or create):
            self._take_lock()
        try:
            if has_node:
                self.node = fsutil.read_json(node_path)
                if self.node.get("format") != FORMAT_VERSION:
                    raise LanceError(f"{node_path}: format {self.node.get('format')!r} is not "
                                     f"{FORMAT_VERSION}; this version cannot open it")
            elif upstream:
                self.legacy = True
                self.node = {"format": FORMAT_VERSION, "cluster_id": "", "node_id": node_id,
                             "next_topic_id": 1, "next_producer_id": 1}
            elif create and not readonly:
                self.node = {"format": FORMAT_VERSION, "cluster_id": str(uuid.uuid4()),
                             "node_id": node_id, "next_topic_id": 1, "next_producer_id": 1}
                os.makedirs(os.path.join(self.path, SEGMENTS), exist_ok=True)
                fsutil.write_json(node_path, self.node)
            else:
                raise LanceError(f"{self.path}: not a LANCE data directory (no {NODE_FILE})"
                                 + ("" if readonly else "; pass create=True to make one"))
            if not readonly:
                os.makedirs(os.path.join(self.path, SEGMENTS), exist_ok=True)
                self.backend = select_backend(self.config.backend)
                self.pool = BufferPool(self.config.buffer_count, self.config.buffer_size)
                # Pinned buffers let io_uring skip page mapping on every write.
                self.backend.register_buffers(self.pool)
                self.completions = Completions(self.backend)
            self.clock = HybridClock(int(self.node.get("node_id", node_id)) if node_id == 0 else node_id)
            self._load_topics()
            if not readonly and self.config.durability == "wal":
                self._open_wal()
            if not readonly and self.config.durability != "sync":
                self._syncer = threading.Thread(target=self._sync_loop, name="lance-syncer", daemon=True)
                self._syncer.start()
        except BaseException:
            self._release_lock()
            raise

    def _take_lock(self) -> None:
        self._dir_lock = DirectoryLock(self.path)

    def _release_lock(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.release()
            self._dir_lock = None

    # -- node.json counters ----------------------------------------------------------

    def _advance(self, counter: str) -> int:
        """Take the next value of a node.json counter, durably, before it is used."""
        with self._lock:
            value = int(self.node.get(counter, 1))
            self.node[counter] = value + 1
            fsutil.write_json(os.path.join(self.path, NODE_FILE), self.node)
            return value

    def _assign_id(self, topic_id: int) -> None:
        if topic_id <= 0:
            raise ValueError(f"topic id {topic_id}: ids start at 1")
        if any(t.id == topic_id for t in self._topics.values()):
            raise TopicExistsError(f"topic id {topic_id} is already in use")
        if topic_id >= int(self.node.get("next_topic_id", 1)):
            self.node["next_topic_id"] = topic_id + 1
            fsutil.write_json(os.path.join(self.path, NODE_FILE), self.node)

    def new_producer_id(self) -> int:
        self._check_writable()
        return self._advance("next_producer_id")

    @property
    def node_id(self) -> int:
        return self.clock.node_id

    @property
    def cluster_id(self) -> str:
        return self.node.get("cluster_id", "")

    # -- topics ----------------------------------------------------------------------

    def _segments_dir(self) -> str:
        return os.path.join(self.path, SEGMENTS)

    def _load_topics(self) -> None:
        root = self._segments_dir()
        if not os.path.isdir(root):
            return
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if not os.path.isdir(folder) or name.startswith("."):
                continue
            if not TOPIC_NAME.match(name):
                self._warn(f"{folder}: not a valid topic name; ignored")
                continue
            meta = self._read_metadata(folder, name)
            topic = Topic(self, folder, meta, readonly=self.readonly or self.legacy, clock=self.clock)
            self.warnings.extend(topic.warnings)
            self._topics[name] = topic

    def _read_metadata(self, folder: str, name: str) -> dict:
        path = os.path.join(folder, METADATA)
        try:
            meta = fsutil.read_json(path)
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            self._warn(f"{path}: missing; the topic is served with default metadata")
            meta = {}
        except ValueError as exc:
            self._warn(f"{path}: unreadable ({exc}); the topic is served with default metadata")
            meta = {}
        meta.setdefault("format", FORMAT_VERSION)
        meta["name"] = name
        meta.setdefault("id", 0)
        meta.setdefault("created_at", 0)
        meta.setdefault("topic_epoch", 1)
        if not isinstance(meta.get("retention"), dict):
            meta["retention"] = Retention().as_dict()
        return meta

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("%s", msg)

    def _check_writable(self) -> None:
        if self.readonly or self.legacy:
            raise ReadOnlyError(f"{self.path} is open read-only")

    def create_topic(self, name: str, retention: Retention | dict | None = None, *,
                     exist_ok: bool = False, topic_id: int | None = None) -> Topic:
        """Create a topic. Its id comes from node.json's counter, or is `topic_id`
        when a cluster (etcd) assigned it; node.json's counter then moves past it,
        so ids stay unique on this node either way."""
        check_topic_name(name)
        self._check_writable()
        with self._lock:
            if name in self._topics:
                if exist_ok and topic_id in (None, self._topics[name].id):
                    return self._topics[name]
                raise TopicExistsError(f"topic {name!r} already exists"
                                       f" (id {self._topics[name].id})")
            if isinstance(retention, dict):
                retention = Retention(int(retention.get("max_age_secs", 0)), int(retention.get("max_bytes", 0)))
            if topic_id is None:
                topic_id = self._advance("next_topic_id")
            else:
                self._assign_id(topic_id)
            meta = {"format": FORMAT_VERSION, "id": topic_id, "name": name,
                    "created_at": int(time.time()), "topic_epoch": 1,
                    "retention": (retention or Retention()).as_dict()}
            folder = os.path.join(self._segments_dir(), name)
            os.makedirs(folder)
            fsutil.write_json(os.path.join(folder, METADATA), meta)
            fsutil.fsync_dir(self._segments_dir())
            topic = Topic(self, folder, meta, readonly=False, clock=self.clock)
            self._topics[name] = topic
            return topic

    def topic(self, name: str) -> Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicError(f"UNKNOWN_TOPIC: no topic named {name!r} in {self.path}") from None

    def topic_by_id(self, topic_id: int) -> Topic:
        for t in self._topics.values():
            if t.id == topic_id and topic_id:
                return t
        raise UnknownTopicError(f"UNKNOWN_TOPIC: no topic with id {topic_id}")

    def topics(self) -> list[Topic]:
        return sorted(self._topics.values(), key=lambda t: (t.id, t.name))

    def delete_topic(self, name: str) -> int:
        self._check_writable()
        with self._lock:
            topic = self.topic(name)
            topic.close()
            del self._topics[name]
            if self.wal is not None:
                self.wal.forget_topic(topic.id)
            # Rename first so a crash never leaves a half-deleted topic that
            # recovery would try to serve.
            doomed = os.path.join(self._segments_dir(), f".{name}.deleted-{topic.id}-{time.time_ns()}")
            os.rename(topic.folder, doomed)
            fsutil.fsync_dir(self._segments_dir())
            shutil.rmtree(doomed, ignore_errors=True)
            return topic.id

    # -- lifecycle -------------------------------------------------------------------

    def sync(self) -> None:
        for t in self.topics():
            if not t.readonly:
                t.sync()

    # -- durability modes ---------------------------------------------------------------

    def _open_wal(self) -> None:
        """Replay the WAL into the recovered segments, sync them, then log anew
        (FORMAT.md section 7)."""
        from .wal import Wal, replay
        wal_dir = os.path.join(self.path, WAL_DIR)
        os.makedirs(wal_dir, exist_ok=True)
        by_id = {t.id: t for t in self._topics.values() if t.id}
        report = replay(wal_dir, {tid: t.high_watermark for tid, t in by_id.items()},
                        lambda tid, base, batch: by_id[tid].append_raw(batch, base, sync=False))
        for tid, end in report.ends.items():
            if tid in by_id and end != by_id[tid].high_watermark:
                raise LanceError(f"{wal_dir}: replay left topic {tid} at {by_id[tid].high_watermark}, "
                                 f"expected {end}")
        for t in by_id.values():
            t.sync()
        if report.applied:
            log.info("wal: replayed %d entries from %d files", report.applied, len(report.files))
        self.wal = Wal(wal_dir, backend=self.backend, pool=self.pool)
        for t in by_id.values():
            self.wal.mark_durable(t.id, t.high_watermark)

    def _sync_loop(self) -> None:
        """`async` and `wal` modes: sync written segments every sync_interval_ms."""
        interval = self.config.sync_interval_ms / 1000
        while not self._stop_syncer.wait(interval):
            for t in list(self._topics.values()):
                if t._dirty:
                    try:
                        t.sync()
                    except LanceError as exc:  # the topic records its failure itself
                        log.error("sync of topic %s failed: %s", t.name, exc)

    async def drain(self) -> None:
        """Wait for every asyncio append of every topic to be confirmed."""
        for t in self.topics():
            await t.drain()

    def close(self) -> None:
        if self._syncer is not None:
            self._stop_syncer.set()
            self._syncer.join()
            self._syncer = None
        for t in list(self._topics.values()):
            t.close()
        if self.wal is not None:
            self.wal.close()
            self.wal = None
        self._topics.clear()
        if self.completions is not None:
            self.completions.detach()
        if self.backend is not None:
            self.backend.close()
        self._release_lock()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writable"
        return f"Store({self.path!r}, {mode}, topics={len(self._topics)})"


def open(path, *, create: bool = False, readonly: bool = False, node_id: int = 0,
         config: StoreConfig | None = None) -> Store:  # noqa: A001 - mirrors the builtin on purpose
    """Open a data directory (see FORMAT.md). `create=True` makes it when absent;
    `readonly=True` never writes and takes no lock."""
    return Store(path, create=create, readonly=readonly, node_id=node_id, config=config)
