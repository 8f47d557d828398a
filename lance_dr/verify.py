"""Verification of a shipped copy: the manifest's checksum, every object's size and BLAKE3
digest, every batch's CRCs and offsets, gaps between segments, and a per-topic verdict.

Read-only over a Target (objects of remote targets are fetched into a scratch
folder one at a time); restore checks each downloaded file with `check_segment`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from lance_store.clikit import human_ns
from lance_store.segment.reader import SegmentScan, scan_segment
from lance_store.verify import DAMAGE, NOTE, WARNING, Finding

from .digest import digest_bytes, digest_file
from .errors import ManifestError
from .generations import list_generations, load_manifest, read_latest
from .manifest import Manifest, SegmentEntry, TopicEntry
from .progress import ProgressBar, no_bar
from .state import VerifyState
from .targets.base import Target


@dataclass
class TopicVerdict:
    name: str
    low: int
    high: int                       # end of what the manifest says was shipped
    restorable_offset: int          # end of the longest intact run of segments from `low`
    restorable_ts: int | None
    complete: bool

    def __str__(self) -> str:
        point = f"restorable to offset {self.restorable_offset} / time {human_ns(self.restorable_ts)}"
        return point if self.complete else f"{point} (shipped up to {self.high}; the rest is damaged)"


@dataclass
class TargetReport:
    url: str
    generation: int | None
    latest: int | None
    findings: list[Finding] = field(default_factory=list)
    topics: list[TopicVerdict] = field(default_factory=list)
    bytes_checked: int = 0
    files_checked: int = 0
    files_skipped: int = 0
    seconds: float = 0.0

    @property
    def damaged(self) -> bool:
        return any(f.severity == DAMAGE for f in self.findings)

    def add(self, severity: str, path: str, what: str, offset=None, expected=None, found=None) -> None:
        self.findings.append(Finding(severity, path, what, offset, expected, found))

    def as_dict(self) -> dict:
        doc = asdict(self)
        doc["ok"] = not self.damaged
        for t, verdict in zip(doc["topics"], self.topics):
            t["verdict"] = str(verdict)
        return doc


def check_segment(path: str, entry: SegmentEntry, where: str, *, progress=None) -> tuple[list[Finding], SegmentScan | None]:
    """Check a local copy of a shipped segment against its manifest entry.

    Its first `entry.size` bytes must have the recorded digest and be whole,
    valid batches (header and payload CRCs, base offsets) matching the recorded
    offsets and times. Record framing inside the batches is left to
    `lance_store.verify` (restore runs it on the restored directory): the digest
    already ties these bytes to what lance_store wrote at the source.
    """
    found: list[Finding] = []

    def add(what, offset=None, expected=None, got=None):
        found.append(Finding(DAMAGE, where, what, offset, expected, got))

    size = os.path.getsize(path)
    if size < entry.size:
        add("truncated: shorter than the manifest says", None, entry.size, size)
        return found, None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lance-dr-digest") as pool:
        digest = pool.submit(digest_file, path, entry.size)
        scan = scan_segment(path, entry.first_offset, length=entry.size, progress=progress)
        actual = digest.result()
    if actual != entry.blake3:
        add("BLAKE3 digest differs from the manifest", None, entry.blake3, actual)
    if scan.valid_end != entry.size:
        why = str(scan.error) if scan.error is not None else "end of valid batches"
        add(f"invalid batch ({why}); only {scan.valid_end} of {entry.size} bytes are valid batches",
            entry.first_offset + scan.valid_end)
    b = scan.batches
    n = len(b.pos)
    if scan.valid_end == entry.size:
        if n != entry.batches:
            add("batch count differs from the manifest", None, entry.batches, n)
        elif n:
            for what, expected, got in (("first timestamp", entry.first_ts, int(b.first_ts[0])),
                                        ("last timestamp", entry.last_ts, int(b.last_ts[-1])),
                                        ("last batch offset", entry.last_offset, int(b.base_offset[-1]))):
                if expected != got:
                    add(f"{what} differs from the manifest", None, expected, got)
            if not entry.sealed and (entry.last_batch_pos, entry.last_batch_crc) != \
                    (int(b.pos[-1]), int(b.header_crc[-1])):
                add("last batch differs from the manifest", None,
                    (entry.last_batch_pos, entry.last_batch_crc), (int(b.pos[-1]), int(b.header_crc[-1])))
    return found, scan


def verify_target(target: Target, *, generation: int | None = None, since_last: bool = False,
                  state: VerifyState | None = None, progress: ProgressBar = no_bar,
                  workdir: str | None = None) -> TargetReport:
    """Verify one generation (LATEST's by default) of the copy on `target`."""
    started = time.perf_counter()
    latest = read_latest(target)
    report = TargetReport(target.url, generation if generation is not None else latest, latest)
    listing = target.list()
    if report.generation is None:
        hint = ""
        if "node.json" in listing and not any(p.startswith("manifests/") for p in listing):
            hint = " (it looks like a data directory: `lance-store verify` checks those)"
        report.add(DAMAGE, f"{target.url}/LATEST", f"no LATEST: nothing has been published to this target{hint}")
        return _done(report, started)
    for gen in list_generations(target, load=False, listing=listing):
        if not gen.published:
            report.add(NOTE, f"{target.url}/{gen.path}", f"generation {gen.number} is not named by LATEST "
                       "(an interrupted or running ship); ignored")
    try:
        manifest = load_manifest(target, report.generation)
    except ManifestError as exc:
        report.add(DAMAGE, f"{target.url}/manifests", str(exc))
        return _done(report, started)
    state = state if state is not None else (VerifyState() if since_last else None)
    clean = state.clean_objects(target.url) if (since_last and state is not None) else {}
    damaged_objects = _check_objects(report, target, manifest, listing, clean, progress, workdir)
    _check_files(report, target, manifest, listing, check_mirror=report.generation == latest and not since_last)
    report.topics = [_verdict(report, target, t, damaged_objects) for t in manifest.topics]
    if not report.damaged and state is not None:
        state.record_clean(target.url, manifest.generation,
                           {p: (e.size, e.blake3) for p, e in manifest.objects().items()})
    return _done(report, started)


def _done(report: TargetReport, started: float) -> TargetReport:
    report.seconds = time.perf_counter() - started
    return report


def _check_objects(report: TargetReport, target: Target, manifest: Manifest, listing: dict[str, int],
                   clean: dict, progress: ProgressBar, workdir: str | None) -> set[str]:
    damaged: set[str] = set()
    todo: list[SegmentEntry] = []
    for path, entry in manifest.objects().items():
        where = f"{target.url}/{path}"
        size = listing.get(path)
        if size is None:
            report.add(DAMAGE, where, f"the manifest of generation {manifest.generation} names it, "
                       "the target lacks it")
            damaged.add(path)
        elif size < entry.size or (entry.sealed and size != entry.size):
            report.add(DAMAGE, where, "object size differs from the manifest "
                       + ("(truncated)" if size < entry.size else "(a sealed segment grew)"),
                       None, entry.size, size)
            damaged.add(path)
        elif clean.get(path) == (entry.size, entry.blake3):
            report.files_skipped += 1
        else:
            todo.append(entry)
    scratch = None
    try:
        with progress(sum(e.size for e in todo)) as advance:
            for entry in todo:
                where = f"{target.url}/{entry.object}"
                local = target.local_path(entry.object)
                if local is None:
                    scratch = scratch or tempfile.mkdtemp(prefix="lance-dr-verify-", dir=workdir)
                    local = os.path.join(scratch, "object")
                    if os.path.exists(local):
                        os.unlink(local)
                    target.download(entry.object, local, entry.size)
                found, _scan = check_segment(local, entry, where, progress=advance)
                report.findings.extend(found)
                report.files_checked += 1
                report.bytes_checked += entry.size
                if found:
                    damaged.add(entry.object)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return damaged


def _check_files(report: TargetReport, target: Target, manifest: Manifest, listing: dict[str, int], *,
                 check_mirror: bool) -> None:
    for f in manifest.files:
        raw = f.raw()
        if len(raw) != f.size or digest_bytes(raw) != f.blake3:
            report.add(DAMAGE, f"{target.url}/{manifest.generation}:{f.path}",
                       "embedded copy differs from its recorded digest", None, f.blake3, digest_bytes(raw))
        elif check_mirror and listing.get(f.path) != f.size:
            report.add(WARNING, f"{target.url}/{f.path}", "the mirrored copy differs in size from the "
                       "manifest's (restore uses the manifest's)", None, f.size, listing.get(f.path))
    if manifest.file("node.json") is None:
        report.add(WARNING, f"{target.url}/{manifest.generation}", "the manifest embeds no node.json")


def _verdict(report: TargetReport, target: Target, topic: TopicEntry, damaged: set[str]) -> TopicVerdict:
    end, ts, complete = topic.low, None, True
    prev = None
    for seg in topic.segments:
        if prev is not None and prev.end_offset != seg.first_offset:
            report.add(DAMAGE, f"{target.url}/segments/{topic.name}", "offset gap between segments",
                       prev.end_offset, prev.end_offset, seg.first_offset)
            complete = False
        if not complete or (seg.object in damaged):
            complete = False
            break
        end, ts = seg.end_offset, seg.last_ts if seg.last_ts is not None else ts
        prev = seg
    return TopicVerdict(topic.name, topic.low, topic.high, end, ts, complete)
