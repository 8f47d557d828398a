"""A consistent, read-only view of a data directory to ship: its topics, segments and small files.

Opened through `lance_store.open(..., readonly=True)`, so it is safe next to a
running broker; each segment file is pinned open at once, so a seal (rename)
or retention (unlink) while shipping cannot pull bytes out from under a copy.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import lance_store
from lance_store.segment.header import BATCH_OVERHEAD, BatchHeader
from lance_store.segment.naming import SegmentName

from .errors import DRError, SourceChanged

SMALL_FILES_MAX = 16 << 20     # node.json, metadata, epochs, offsets/: embedded in manifests
_RETRIES = 5


@dataclass
class SourceSegment:
    topic: str
    name: SegmentName
    path: str
    size: int                  # valid bytes: the whole file when sealed, whole batches when active
    sealed: bool
    mtime_ns: int
    fd: int = -1

    @property
    def pinned_path(self) -> str:
        """A path that opens this very file even after a rename or unlink (Linux /proc)."""
        return f"/proc/{os.getpid()}/fd/{self.fd}" if self.fd >= 0 else self.path

    def header_at(self, pos: int) -> BatchHeader | None:
        """The batch header record at byte `pos`, parsed by lance_store (None past the data)."""
        if pos + BATCH_OVERHEAD > self.size:
            return None
        return BatchHeader.unpack(os.pread(self.fd, BATCH_OVERHEAD, pos))


@dataclass
class SourceTopic:
    name: str
    id: int
    metadata: dict
    high: int
    segments: list[SourceSegment] = field(default_factory=list)


@dataclass
class Snapshot:
    data_dir: str
    node: dict
    topics: list[SourceTopic]
    files: dict[str, bytes]     # relative path -> bytes, for node.json, metadata, epochs, offsets/
    taken_at_ns: int

    def close(self) -> None:
        for t in self.topics:
            for s in t.segments:
                if s.fd >= 0:
                    os.close(s.fd)
                    s.fd = -1

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def topic(self, name: str) -> SourceTopic | None:
        return next((t for t in self.topics if t.name == name), None)

    @property
    def high_watermarks(self) -> dict[str, int]:
        return {t.name: t.high for t in self.topics}


def take_snapshot(data_dir) -> Snapshot:
    """Read the data directory as it is now; retried when a seal or retention races the read."""
    last: Exception | None = None
    for _ in range(_RETRIES):
        try:
            return _take(os.path.abspath(os.fspath(data_dir)))
        except (FileNotFoundError, SourceChanged) as exc:
            last = exc
            time.sleep(0.05)
    raise SourceChanged(f"{data_dir}: files kept changing while being read ({last}); is something "
                        "deleting segments?")


def _take(data_dir: str) -> Snapshot:
    taken = time.time_ns()
    with lance_store.open(data_dir, readonly=True) as store:
        if store.legacy:
            raise DRError(f"{data_dir}: an upstream (legacy) data directory; open it once with the "
                          "broker to upgrade it before shipping")
        topics = []
        for topic in store.topics():
            st = SourceTopic(topic.name, topic.id, dict(topic.meta), topic.high_watermark)
            if sum(not s.sealed for s in topic.segments) > 1:
                # Normal for an instant during a seal; lasting, it is an interrupted
                # seal that the broker's recovery completes when it next opens the directory.
                raise SourceChanged(f"{topic.folder}: more than one active segment (a seal in progress)")
            for seg in topic.segments:
                st.segments.append(SourceSegment(topic.name, seg.name, seg.path, seg.size, seg.sealed, 0))
            topics.append(st)
        node = dict(store.node)
    snap = Snapshot(data_dir, node, topics, {}, taken)
    try:
        for t in topics:
            for s in t.segments:
                s.fd = os.open(s.path, os.O_RDONLY)   # FileNotFoundError: sealed or removed; retry
                st = os.fstat(s.fd)
                s.mtime_ns = st.st_mtime_ns
                if s.sealed and st.st_size != s.size:
                    raise SourceChanged(f"{s.path}: sealed segment is {st.st_size} bytes, was {s.size}")
        snap.files = _small_files(data_dir, [t.name for t in topics])
    except BaseException:
        snap.close()
        raise
    return snap


def _small_files(data_dir: str, topics: list[str]) -> dict[str, bytes]:
    wanted = ["node.json"]
    for name in topics:
        for f in ("metadata.json", "epochs"):
            wanted.append(f"segments/{name}/{f}")
    offsets = os.path.join(data_dir, "offsets")
    for folder, _dirs, files in os.walk(offsets):
        for f in sorted(files):
            if not f.endswith(".tmp"):   # a write still on its way to its rename
                wanted.append(os.path.relpath(os.path.join(folder, f), data_dir).replace(os.sep, "/"))
    out = {}
    for rel in wanted:
        path = os.path.join(data_dir, rel)
        try:
            size = os.path.getsize(path)
            if size > SMALL_FILES_MAX:
                raise DRError(f"{path}: {size} bytes; files outside segments/ are embedded in "
                              f"manifests and must stay under {SMALL_FILES_MAX} bytes")
            with open(path, "rb") as f:
                out[rel] = f.read()
        except FileNotFoundError:
            continue
    return out
