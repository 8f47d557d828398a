"""Restoring a generation into a new data directory, optionally to a point in time.

Everything is downloaded into a hidden sibling folder (kept between attempts,
so a retry resumes), verified byte for byte, cut to the requested point,
indexed, and opened once with lance_store; only then is it moved into place.
The destination is never touched before that last step.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import lance_store
from lance_store import fsutil
from lance_store.recovery import cut_tail
from lance_store.repair import reindex_path
from lance_store.segment.header import BATCH_OVERHEAD
from lance_store.segment.naming import SegmentName, parse
from lance_store.verify import verify_path

from .errors import DamageError, RestoreError
from .generations import load_latest, load_manifest
from .manifest import Manifest, SegmentEntry, TopicEntry
from .progress import ProgressBar, no_bar
from .targets.base import Target
from .verify import check_segment

MARKER = ".lance-dr-restore.json"


@dataclass(frozen=True)
class RestorePoint:
    """Where to stop: a time (every topic), an offset (every topic, each clamped to what it
    holds), or exact offsets per topic. All empty means everything shipped."""

    at_ns: int | None = None
    offset: int | None = None
    topic_offsets: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.at_ns is not None and (self.offset is not None or self.topic_offsets):
            raise ValueError("give a time or offsets, not both")


@dataclass
class RestoreResult:
    url: str
    generation: int
    path: str
    node_id: int
    downloaded_bytes: int = 0
    verified_bytes: int = 0
    seconds: float = 0.0
    topics: dict = field(default_factory=dict)     # name -> {"low", "high", "shipped_high", "cut"}

    def as_dict(self) -> dict:
        return asdict(self)


def staging_dir(dest: str) -> str:
    """The hidden sibling a restore into `dest` downloads into."""
    parent, name = os.path.split(os.path.abspath(dest).rstrip(os.sep))
    return os.path.join(parent, f".{name}.lance-dr-restore")


def check_destination(dest: str, force: bool) -> None:
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise RestoreError(f"{dest}: exists and is not a folder")
    if os.path.isdir(dest) and os.listdir(dest) and not force:
        raise RestoreError(f"{dest}: not empty ({len(os.listdir(dest))} entries); restore into an empty or "
                           "absent folder, or pass --force to replace what is there")


def restore(target: Target, dest, *, generation: int | None = None, point: RestorePoint = RestorePoint(),
            node_id: int | None = None, force: bool = False, progress: ProgressBar = no_bar) -> RestoreResult:
    started = time.perf_counter()
    dest = os.path.abspath(os.fspath(dest))
    check_destination(dest, force)
    manifest = load_latest(target) if generation is None else load_manifest(target, generation)
    plans = [_plan_topic(t, point) for t in manifest.topics]
    stage = _prepare_stage(dest, target, manifest, point)
    node = dict(manifest.node)
    if node_id is not None:
        node["node_id"] = int(node_id)
    result = RestoreResult(target.url, manifest.generation, dest, int(node.get("node_id", 0)))
    _download(target, stage, plans, result, progress)
    for plan in plans:
        plan.cut(stage)
    _write_small_files(stage, manifest, node, plans)
    reindex_path(stage)
    _open_and_check(stage, plans, node_id)
    os.unlink(os.path.join(stage, MARKER))
    _move_into_place(stage, dest, force)
    result.topics = {p.topic.name: p.summary() for p in plans}
    result.seconds = time.perf_counter() - started
    return result


class _TopicPlan:
    """Which shipped segments one topic needs, and where to cut the last of them."""

    def __init__(self, topic: TopicEntry, segments: list[SegmentEntry], *, limit_offset: int | None,
                 limit_ts: int | None):
        self.topic = topic
        self.segments = segments
        self.limit_offset = limit_offset
        self.limit_ts = limit_ts
        self.scans: dict[str, object] = {}
        self.high = topic.low

    def folder(self, stage: str) -> str:
        return os.path.join(stage, "segments", self.topic.name)

    def cut(self, stage: str) -> None:
        """Truncate the last needed segment at the restore point (whole batches only)."""
        folder = self.folder(stage)
        self.high = self.segments[-1].end_offset if self.segments else self.topic.low
        if not self.segments:
            first = self.topic.segments[0] if self.topic.segments else None
            if first is not None:
                name = parse(first.name)
                _create_empty(os.path.join(folder, SegmentName(first.first_offset, name.t0).filename))
            return
        last = self.segments[-1]
        scan = self.scans.get(last.name)
        if scan is None or (self.limit_offset is None and self.limit_ts is None):
            return
        b = scan.batches
        ends = b.pos + np.uint64(BATCH_OVERHEAD) + b.payload_length
        if self.limit_ts is not None:
            keep = int(np.searchsorted(b.last_ts, np.uint64(self.limit_ts), side="right"))
        else:
            keep = int(np.searchsorted(ends + np.uint64(last.first_offset), np.uint64(self.limit_offset),
                                       side="right"))
        cut = int(ends[keep - 1]) if keep else 0
        if cut >= last.size:
            return
        path = os.path.join(folder, last.name)
        if cut == 0:
            os.unlink(path)
            self.segments = self.segments[:-1]
            if not self.segments:
                name = parse(last.name)
                _create_empty(os.path.join(folder, SegmentName(last.first_offset, name.t0).filename))
            self.high = last.first_offset if not self.segments else self.segments[-1].end_offset
            return
        cut_tail(path, cut)
        self.high = last.first_offset + cut

    def summary(self) -> dict:
        return {"low": self.topic.low, "high": self.high, "shipped_high": self.topic.high,
                "cut": self.high < self.topic.high}


def _plan_topic(topic: TopicEntry, point: RestorePoint) -> _TopicPlan:
    segs = topic.segments
    if point.at_ns is not None:
        with_data = [i for i, s in enumerate(segs) if s.first_ts is not None]
        if all(segs[i].last_ts <= point.at_ns for i in with_data):
            return _TopicPlan(topic, list(segs), limit_offset=None, limit_ts=None)
        k = max((i for i in with_data if segs[i].first_ts <= point.at_ns), default=-1)
        return _TopicPlan(topic, segs[:k + 1], limit_offset=None, limit_ts=point.at_ns)
    limit = point.topic_offsets.get(topic.name)
    if limit is not None:
        if not topic.low <= limit <= topic.high:
            raise RestoreError(f"topic {topic.name!r}: offset {limit} is outside what generation holds "
                               f"(low {topic.low}, high {topic.high})")
    elif point.offset is not None:
        limit = max(topic.low, min(point.offset, topic.high))
    if limit is None or limit >= topic.high:
        return _TopicPlan(topic, list(segs), limit_offset=None, limit_ts=None)
    needed = [s for s in segs if s.first_offset < limit]
    return _TopicPlan(topic, needed, limit_offset=limit, limit_ts=None)


def _prepare_stage(dest: str, target: Target, manifest: Manifest, point: RestorePoint) -> str:
    """The staging folder, kept from an earlier attempt only when it was for the same
    generation and the same point (what it holds may already be cut)."""
    stage = staging_dir(dest)
    marker = {"url": target.url, "generation": manifest.generation, "checksum": manifest.checksum,
              "point": asdict(point)}
    try:
        with open(os.path.join(stage, MARKER)) as f:
            resumable = json.load(f) == marker
    except (OSError, ValueError):
        resumable = False
    if not resumable and os.path.exists(stage):
        shutil.rmtree(stage)
    os.makedirs(stage, exist_ok=True)
    fsutil.write_json(os.path.join(stage, MARKER), marker)
    return stage


def _download(target: Target, stage: str, plans: list[_TopicPlan], result: RestoreResult,
              progress: ProgressBar) -> None:
    findings = []
    total = sum(s.size for p in plans for s in p.segments)
    with progress(total) as advance:
        for plan in plans:
            folder = plan.folder(stage)
            os.makedirs(folder, exist_ok=True)
            for entry in plan.segments:
                local = os.path.join(folder, entry.name)
                if entry.object is None:
                    _create_empty(local)
                    continue
                found, scan = _fetch_checked(target, entry, local, result, advance)
                if found:
                    findings.extend(found)
                    os.unlink(local)   # a bad copy must not be resumed from
                else:
                    plan.scans[entry.name] = scan
    if findings:
        lines = "; ".join(str(f) for f in findings[:5])
        more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
        raise DamageError(f"generation {result.generation} on {target.url} is damaged: {lines}{more}. "
                          "`lance-dr verify` shows how far each topic restores; pick an earlier "
                          "--generation or a point before the damage (--offset/--at)", findings)


def _fetch_checked(target: Target, entry: SegmentEntry, local: str, result: RestoreResult, advance):
    where = f"{target.url}/{entry.object}"
    resumed = os.path.exists(local) and os.path.getsize(local) > 0
    for attempt in (0, 1):
        before = os.path.getsize(local) if os.path.exists(local) else 0
        target.download(entry.object, local, entry.size, progress=advance)
        result.downloaded_bytes += max(0, entry.size - before)
        found, scan = check_segment(local, entry, where)
        result.verified_bytes += entry.size
        if not found or not resumed or attempt:
            return found, scan
        # What an interrupted download left may be the damaged part: fetch it whole once more.
        os.unlink(local)
    return found, scan


def _write_small_files(stage: str, manifest: Manifest, node: dict, plans: list[_TopicPlan]) -> None:
    cuts = {p.topic.name: p for p in plans}
    for f in manifest.files:
        raw = f.raw()
        if f.path == "node.json":
            continue
        parts = f.path.split("/")
        if len(parts) == 3 and parts[0] == "segments" and parts[2] == "epochs" and parts[1] in cuts:
            raw = _epochs_until(raw, cuts[parts[1]])
        path = os.path.join(stage, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fsutil.write_atomic(path, raw)
    for t in manifest.topics:
        meta = os.path.join(stage, "segments", t.name, "metadata.json")
        if not os.path.exists(meta):
            fsutil.write_json(meta, t.metadata)
    fsutil.write_json(os.path.join(stage, "node.json"), node)


def _epochs_until(raw: bytes, plan: _TopicPlan) -> bytes:
    """Leader epochs that started past the restore point never wrote a surviving byte."""
    if plan.limit_offset is None and plan.limit_ts is None:
        return raw
    keep = [line for line in raw.decode().splitlines()
            if len(line.split()) == 2 and int(line.split()[1]) < plan.high]
    return ("".join(f"{line}\n" for line in keep)).encode()


def _open_and_check(stage: str, plans: list[_TopicPlan], node_id: int | None) -> None:
    """Open the restored directory once (recovery makes each topic's active segment) and check
    that every topic ends where the plan says, then verify it the way lance-store does."""
    with lance_store.open(stage, node_id=node_id or 0) as store:
        for plan in plans:
            topic = store.topic(plan.topic.name)
            if (topic.low_watermark, topic.high_watermark) != (plan.topic.low, plan.high):
                raise RestoreError(f"topic {plan.topic.name!r}: restored offsets {topic.low_watermark}.."
                                   f"{topic.high_watermark}, expected {plan.topic.low}..{plan.high}")
    report = verify_path(stage)
    if report.damaged:
        bad = [f for f in report.findings if f.severity == "damage"]
        raise DamageError(f"the restored directory fails verification: {bad[0]}", bad)


def _move_into_place(stage: str, dest: str, force: bool) -> None:
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    if not os.path.exists(dest):
        os.rename(stage, dest)
    elif not os.listdir(dest):
        for entry in os.listdir(stage):
            os.rename(os.path.join(stage, entry), os.path.join(dest, entry))
        os.rmdir(stage)
        fsutil.fsync_dir(dest)
    elif force:
        old = os.path.join(parent, f".{os.path.basename(dest)}.lance-dr-old-{time.time_ns()}")
        os.rename(dest, old)
        os.rename(stage, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        raise RestoreError(f"{dest}: became non-empty during the restore; nothing was moved "
                           f"(the verified copy is in {stage})")
    fsutil.fsync_dir(parent)


def _create_empty(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))


