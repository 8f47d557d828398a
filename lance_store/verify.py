"""Verification of a data directory, a topic folder or one segment, read-only.

Checks every batch's CRCs and records, offset continuity, sparse indexes and
metadata; `lance-store verify` and `lance-dr verify` both report from here.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from . import index as sparse_index
from .recovery import describe_error
from .segment import naming
from .segment.reader import SegmentScan, scan_segment

DAMAGE, WARNING, NOTE = "damage", "warning", "note"
Progress = Callable[[int], None]


@dataclass
class Finding:
    severity: str
    path: str
    what: str
    offset: int | None = None
    expected: object = None
    found: object = None

    def __str__(self) -> str:
        where = f" at offset {self.offset}" if self.offset is not None else ""
        text = f"{self.severity}: {self.path}{where}: {self.what}"
        if self.expected is not None or self.found is not None:
            text += f" (expected {self.expected}, found {self.found})"
        return text


@dataclass
class SegmentReport:
    path: str
    name: str
    status: str            # sealed | active | legacy
    file_size: int
    valid_bytes: int
    batches: int
    records: int
    first_offset: int
    end_offset: int
    first_ts: int | None
    last_ts: int | None


@dataclass
class TopicReport:
    name: str
    path: str
    segments: list[SegmentReport] = field(default_factory=list)

    @property
    def low(self) -> int:
        return self.segments[0].first_offset if self.segments else 0

    @property
    def high(self) -> int:
        return self.segments[-1].end_offset if self.segments else 0

    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)

    @property
    def bytes(self) -> int:
        return sum(s.valid_bytes for s in self.segments)


@dataclass
class VerifyReport:
    path: str
    topics: list[TopicReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    bytes_checked: int = 0

    @property
    def damaged(self) -> bool:
        return any(f.severity == DAMAGE for f in self.findings)

    def add(self, severity: str, path, what: str, offset=None, expected=None, found=None) -> None:
        self.findings.append(Finding(severity, str(path), what, offset, expected, found))

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "ok": not self.damaged,
            "bytes_checked": self.bytes_checked,
            "topics": [
                {"name": t.name, "path": t.path, "low": t.low, "high": t.high, "records": t.records,
                 "bytes": t.bytes, "segments": [asdict(s) for s in t.segments]}
                for t in self.topics
            ],
            "findings": [asdict(f) for f in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), default=str)


def segment_paths(folder: str) -> list[tuple[naming.SegmentName, str]]:
    out = []
    for entry in os.listdir(folder):
        parsed = naming.parse(entry)
        if parsed is not None:
            out.append((parsed, os.path.join(folder, entry)))
    legacy = any(n.legacy for n, _ in out)
    out.sort(key=lambda item: item[0].t0 if legacy else item[0].base)
    return out


def total_bytes(path: str) -> int:
    """Segment bytes under a path (for progress bars)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(naming.SEGMENT_SUFFIX))
    return total


def _check_index(report: VerifyReport, idx_path: str, scan: SegmentScan) -> None:
    if not os.path.exists(idx_path):
        report.add(WARNING, idx_path, "index missing (`lance-store reindex` rebuilds it)")
        return
    try:
        entries = sparse_index.load(idx_path)
    except ValueError as exc:
        report.add(DAMAGE, idx_path, str(exc))
        return
    if scan.valid_end < scan.file_size:
        # Entries past the first invalid batch cannot be checked (that damage is
        # reported on its own); judging them by the cut scan would condemn a good index.
        entries = entries[np.asarray(entries["offset"]) < scan.end_offset]
    b = scan.batches
    if not len(entries):
        if len(b.pos):
            report.add(DAMAGE, idx_path, "index is empty but the segment has batches", None,
                       ">= 1 entry", 0)
        return
    offs = np.asarray(entries["offset"])
    where = np.searchsorted(b.base_offset, offs)
    inside = where < len(b.base_offset)
    hit = np.zeros(len(offs), dtype=bool)
    hit[inside] = b.base_offset[where[inside]] == offs[inside]
    if not hit.all():
        i = int(np.argmin(hit))
        report.add(DAMAGE, idx_path, f"entry {i} does not point at a batch start", int(offs[i]))
        return
    ts_ok = b.first_ts[where] == entries["ts"]
    key_ok = b.first_key[where] == entries["key"]
    if not (ts_ok.all() and key_ok.all()):
        i = int(np.argmin(ts_ok & key_ok))
        report.add(DAMAGE, idx_path, f"entry {i} SortKey differs from its batch", int(offs[i]),
                   (int(b.first_ts[where[i]]), int(b.first_key[where[i]])),
                   (int(entries["ts"][i]), int(entries["key"][i])))
    if int(offs[0]) != int(b.base_offset[0]):
        report.add(DAMAGE, idx_path, "first entry is not the first batch", int(offs[0]),
                   int(b.base_offset[0]), int(offs[0]))


def verify_segment(report: VerifyReport, path: str, name: naming.SegmentName, *, base: int | None = None,
                   progress: Progress | None = None) -> SegmentReport:
    base = name.base if base is None else base
    if name.legacy:
        from .scanner import scan_legacy
        with open(path, "rb") as f:
            data = f.read()
        recs = scan_legacy(data)
        if recs.valid_end != len(data):
            report.add(DAMAGE, path, "legacy record framing breaks", base + recs.valid_end,
                       f"{len(data)} bytes of records", recs.valid_end)
        report.bytes_checked += len(data)
        if progress:
            progress(len(data))
        return SegmentReport(path, os.path.basename(path), "legacy", len(data), recs.valid_end, 0,
                             len(recs.offset), base, base + recs.valid_end, None, None)
    scan = scan_segment(path, base, check_records=True, progress=progress)
    report.bytes_checked += scan.file_size
    status = "sealed" if name.sealed else "active"
    if scan.valid_end != scan.file_size:
        where = base + scan.valid_end
        why = describe_error(scan)
        if name.sealed:
            report.add(DAMAGE, path, f"sealed segment invalid from byte {scan.valid_end}: {why}", where)
        elif not scan.zero_tail:  # zeros past the data are block padding: normal
            report.add(NOTE, path, f"active segment has a torn tail (recovery cuts it): {why}", where)
    if name.sealed:
        _check_index(report, os.path.join(os.path.dirname(path), name.index_filename), scan)
    b = scan.batches
    n = len(b.pos)
    return SegmentReport(path, os.path.basename(path), status, scan.file_size, scan.valid_end, n,
                         scan.record_count, base, base + scan.valid_end,
                         int(b.first_ts[0]) if n else None, int(b.last_ts[-1]) if n else None)


def _check_metadata(report: VerifyReport, folder: str, name: str) -> None:
    path = os.path.join(folder, "metadata.json")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        report.add(DAMAGE, path, "topic metadata missing")
        return
    except ValueError as exc:
        report.add(DAMAGE, path, f"topic metadata is not valid JSON ({exc})")
        return
    if not isinstance(meta, dict):
        report.add(DAMAGE, path, "topic metadata is not a JSON object")
        return
    if meta.get("name") not in (None, name):
        report.add(DAMAGE, path, "metadata names another topic", None, name, meta.get("name"))
    if meta.get("format", 1) != 1:
        report.add(DAMAGE, path, "unknown metadata format", None, 1, meta.get("format"))


def verify_topic(report: VerifyReport, folder: str, *, progress: Progress | None = None) -> TopicReport:
    name = os.path.basename(os.path.normpath(folder))
    topic = TopicReport(name, folder)
    _check_metadata(report, folder, name)
    segs = segment_paths(folder)
    legacy_base = 0
    for entry in sorted(os.listdir(folder)):
        if naming.parse(entry) is None and not entry.endswith((naming.INDEX_SUFFIX, ".sidx")) \
                and entry not in ("metadata.json", "epochs"):
            report.add(WARNING, os.path.join(folder, entry), "not a LANCE file")
    actives = [n for n, _ in segs if not n.sealed and not n.legacy]
    if len(actives) > 1:
        report.add(WARNING, folder, f"{len(actives)} active segments (an interrupted seal; opening "
                                    "the store completes it)")
    for seg_name, path in segs:
        base = legacy_base if seg_name.legacy else None
        seg = verify_segment(report, path, seg_name, base=base, progress=progress)
        if topic.segments and not seg_name.legacy:
            prev = topic.segments[-1]
            # A sealed segment spans its whole file in offset space, damaged or not.
            prev_end = prev.first_offset + prev.file_size if prev.status == "sealed" else prev.end_offset
            if prev_end != seg.first_offset:
                report.add(DAMAGE, path, "offset gap between segments", seg.first_offset,
                           prev_end, seg.first_offset)
        legacy_base = seg.end_offset
        topic.segments.append(seg)
    return topic


def verify_path(path, *, progress: Progress | None = None) -> VerifyReport:
    """Verify a data directory, a topic folder or a single segment file."""
    path = os.path.abspath(os.fspath(path))
    report = VerifyReport(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isfile(path):
        name = naming.parse(os.path.basename(path))
        if name is None:
            raise ValueError(f"{path}: not a segment file (expected <base>_<t0>[-<t1>].lnc)")
        topic = TopicReport(os.path.basename(os.path.dirname(path)), os.path.dirname(path))
        topic.segments.append(verify_segment(report, path, name, base=0 if name.legacy else None,
                                             progress=progress))
        report.topics.append(topic)
        return report
    seg_root = os.path.join(path, "segments")
    if os.path.isdir(seg_root):
        if not os.path.exists(os.path.join(path, "node.json")):
            report.add(NOTE, path, "no node.json: an upstream (legacy) data directory")
        for entry in sorted(os.listdir(seg_root)):
            folder = os.path.join(seg_root, entry)
            if os.path.isdir(folder) and not entry.startswith("."):
                report.topics.append(verify_topic(report, folder, progress=progress))
        return report
    if any(naming.parse(e) for e in os.listdir(path)) or os.path.exists(os.path.join(path, "metadata.json")):
        report.topics.append(verify_topic(report, path, progress=progress))
        return report
    raise ValueError(f"{path}: neither a data directory (no segments/), a topic folder nor a segment")
