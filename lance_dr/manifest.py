"""What one generation of a shipped copy contains, self-checksummed.

A manifest names the node, every topic with its metadata, every segment with
its size, BLAKE3 digest, offsets and times, and the small files (node.json,
metadata, offsets/) embedded whole, so an old generation restores exactly even
after those files changed. It never touches a target; `generations` does.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields

from .digest import digest_bytes
from .errors import ManifestError

FORMAT = 1
LATEST = "LATEST"
MANIFESTS = "manifests"
GENERATION_DIGITS = 20
_MANIFEST_NAME = re.compile(r"^manifests/(\d{%d})\.json$" % GENERATION_DIGITS)


def manifest_path(generation: int) -> str:
    return f"{MANIFESTS}/{generation:0{GENERATION_DIGITS}d}.json"


def generation_of(path: str) -> int | None:
    """The generation a `manifests/<generation>.json` path names, or None."""
    m = _MANIFEST_NAME.match(path)
    return int(m.group(1)) if m else None


def segment_object(topic: str, filename: str) -> str:
    """Where a segment lives on a target: the same relative path as in the data directory."""
    return f"segments/{topic}/{filename}"


def forked_object(topic: str, filename: str, generation: int) -> str:
    """A segment whose history changed at the source ships whole under a name of its own."""
    return f"{segment_object(topic, filename)}~g{generation}"


def encode_latest(generation: int) -> bytes:
    return f"{generation}\n".encode()


def decode_latest(data: bytes, where: str) -> int:
    text = data.decode(errors="replace").strip()
    if not text.isdigit():
        raise ManifestError(f"{where}: LATEST must hold a generation number, found {text[:40]!r}")
    return int(text)


@dataclass(frozen=True)
class SegmentEntry:
    """One segment file as shipped. For an active segment, `size` is the shipped
    prefix (whole batches only) and `blake3` the digest of that prefix."""

    name: str                      # file name in segments/<topic>/
    object: str | None             # path on the target; None for an empty active segment
    size: int
    blake3: str
    sealed: bool
    first_offset: int
    end_offset: int
    last_offset: int | None        # base offset of the last batch
    first_ts: int | None
    last_ts: int | None
    batches: int
    last_batch_pos: int | None = None   # active only: where the last shipped batch starts
    last_batch_crc: int | None = None   # active only: its header CRC
    source_mtime_ns: int = 0

    def same_content(self, other: "SegmentEntry") -> bool:
        return (self.object, self.size, self.blake3) == (other.object, other.size, other.blake3)


@dataclass(frozen=True)
class FileEntry:
    """A small file of the data directory (node.json, metadata.json, epochs, offsets/...)."""

    path: str
    size: int
    blake3: str
    data: str                      # base64 of the bytes

    @classmethod
    def of(cls, path: str, raw: bytes) -> "FileEntry":
        return cls(path, len(raw), digest_bytes(raw), base64.b64encode(raw).decode())

    def raw(self) -> bytes:
        return base64.b64decode(self.data)


@dataclass
class TopicEntry:
    name: str
    id: int
    metadata: dict
    segments: list[SegmentEntry] = field(default_factory=list)

    @property
    def low(self) -> int:
        return self.segments[0].first_offset if self.segments else 0

    @property
    def high(self) -> int:
        return self.segments[-1].end_offset if self.segments else 0

    @property
    def last_ts(self) -> int | None:
        stamps = [s.last_ts for s in self.segments if s.last_ts is not None]
        return max(stamps) if stamps else None

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self.segments)


@dataclass
class Manifest:
    generation: int
    created_at_ns: int
    snapshot_at_ns: int            # when the data directory was read
    source: dict                   # host and data directory shipped from
    node: dict                     # node.json as shipped
    topics: list[TopicEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    format: int = FORMAT
    checksum: str = ""

    # -- lookups ---------------------------------------------------------------------

    def topic(self, name: str) -> TopicEntry | None:
        return next((t for t in self.topics if t.name == name), None)

    def segment(self, topic: str, name: str) -> SegmentEntry | None:
        t = self.topic(topic)
        return None if t is None else next((s for s in t.segments if s.name == name), None)

    def objects(self) -> dict[str, SegmentEntry]:
        """Every target object this generation needs, by path."""
        return {s.object: s for t in self.topics for s in t.segments if s.object}

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.topics)

    @property
    def newest_ts(self) -> int | None:
        stamps = [t.last_ts for t in self.topics if t.last_ts is not None]
        return max(stamps) if stamps else None

    def same_data(self, other: "Manifest") -> bool:
        """Whether two manifests describe the same bytes (ignoring generation and times)."""
        return _content(self) == _content(other)

    # -- bytes -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc.pop("checksum")
        return doc

    def encode(self) -> bytes:
        doc = self.to_dict()
        self.checksum = "blake3:" + digest_bytes(_canonical(doc))
        doc["checksum"] = self.checksum
        return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes, where: str) -> "Manifest":
        """Parse and check a manifest; ManifestError names `where` and what is wrong."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: not a JSON object")
        stored = doc.pop("checksum", None)
        actual = "blake3:" + digest_bytes(_canonical(doc))
        if stored != actual:
            raise ManifestError(f"{where}: manifest checksum mismatch (expected {actual}, found {stored})")
        if doc.get("format") != FORMAT:
            raise ManifestError(f"{where}: manifest format {doc.get('format')!r}, expected {FORMAT}")
        try:
            topics = [TopicEntry(t["name"], int(t["id"]), t["metadata"],
                                 [_build(SegmentEntry, s) for s in t["segments"]]) for t in doc["topics"]]
            files = [_build(FileEntry, f) for f in doc["files"]]
            return cls(int(doc["generation"]), int(doc["created_at_ns"]), int(doc["snapshot_at_ns"]),
                       doc["source"], doc["node"], topics, files, FORMAT, stored)
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None


def _build(cls, doc: dict):
    names = {f.name for f in fields(cls)}
    missing = [f.name for f in fields(cls) if f.name not in doc
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise KeyError(f"{cls.__name__} lacks {', '.join(missing)}")
    return cls(**{k: v for k, v in doc.items() if k in names})


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _content(m: Manifest) -> bytes:
    doc = m.to_dict()
    for key in ("generation", "created_at_ns", "snapshot_at_ns"):
        doc.pop(key)
    return _canonical(doc)
