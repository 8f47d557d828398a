"""Shipping a data directory to a target: incremental, resumable, safe next to a running broker.

Order of work: the segments the target lacks (sealed ones whole, the active one
up to its last complete batch), the small files, the manifest, LATEST, and only
then the removal of files no kept generation names.
"""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from lance_store.segment.reader import scan_segment

from .digest import digest_fd
from .errors import DRError, ManifestError, SourceChanged, TargetError
from .generations import list_generations, load_manifest, read_latest
from .manifest import (LATEST, MANIFESTS, FileEntry, Manifest, SegmentEntry, TopicEntry, encode_latest,
                       forked_object, generation_of, manifest_path, segment_object)
from .progress import ProgressBar, no_bar
from .source import Snapshot, SourceSegment, take_snapshot
from .targets.base import Target, Upload

DEFAULT_KEEP = 8
PRUNED_FOLDERS = ("segments", "offsets", MANIFESTS)
_ATTEMPTS = 3


class SourceDamage(DRError):
    """A sealed segment of the data directory fails its own checks; shipping it would copy damage."""


@dataclass
class ShipResult:
    url: str
    generation: int | None          # published by this ship; None when the target was up to date
    latest: int | None              # what LATEST names afterwards
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    skipped_files: int = 0
    forked: list[str] = field(default_factory=list)
    pruned_files: int = 0
    snapshot_at_ns: int = 0
    seconds: float = 0.0
    topics: dict[str, int] = field(default_factory=dict)   # shipped end offset per topic

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Plan:
    seg: SourceSegment
    object: str | None
    entry: SegmentEntry | None = None    # set when the target already holds it as shipped before
    upload: Upload | None = None
    forked: bool = False


def ship(data_dir, target: Target, *, keep: int = DEFAULT_KEEP, bwlimit: int | None = None,
         progress: ProgressBar = no_bar) -> ShipResult:
    """Ship the data directory's current state as a new generation (if anything changed)."""
    if keep < 1:
        raise ValueError(f"keep {keep}: at least the newest generation must be kept")
    started = time.perf_counter()
    for attempt in range(_ATTEMPTS):
        try:
            with take_snapshot(data_dir) as snap:
                result = _Shipment(snap, target, keep, bwlimit, progress).run()
            result.seconds = time.perf_counter() - started
            return result
        except SourceChanged:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class _Shipment:
    def __init__(self, snap: Snapshot, target: Target, keep: int, bwlimit: int | None,
                 progress: ProgressBar):
        self.snap = snap
        self.target = target
        self.keep = keep
        self.bwlimit = bwlimit
        self.progress = progress
        self._known: dict[str, tuple[int, str]] | None = None

    # -- what the target holds -------------------------------------------------------

    def _load_history(self) -> None:
        self.latest = read_latest(self.target)
        self.listing = self.target.list()
        numbers = [g for g in map(generation_of, self.listing) if g is not None]
        self.generation = max(numbers + [self.latest or 0]) + 1
        self.prev: Manifest | None = None
        if self.latest is not None:
            try:
                self.prev = load_manifest(self.target, self.latest)
            except ManifestError:
                # Ship a fresh generation that trusts nothing of the damaged one;
                # `lance-dr verify` reports it.
                self.prev = None

    def known_objects(self) -> dict[str, tuple[int, str]]:
        """(size, digest) of every object some manifest on the target names."""
        if self._known is None:
            self._known = {}
            for gen in list_generations(self.target, listing={
                    p: s for p, s in self.listing.items() if p.startswith(MANIFESTS + "/")}):
                if gen.manifest is not None:
                    for path, e in gen.manifest.objects().items():
                        self._known.setdefault(path, (e.size, e.blake3))
        return self._known

    # -- planning --------------------------------------------------------------------

    def _plan_sealed(self, seg: SourceSegment) -> _Plan:
        name = seg.name.filename
        rel = segment_object(seg.topic, name)
        prev = self.prev.segment(seg.topic, name) if self.prev else None
        if prev is not None and prev.sealed and prev.size == seg.size and prev.object \
                and prev.source_mtime_ns == seg.mtime_ns and self.listing.get(prev.object) == seg.size:
            return _Plan(seg, prev.object, entry=prev)
        here = self.listing.get(rel)
        named = self.known_objects().get(rel)
        if here == seg.size:
            # Arrived whole in a ship that never published (or an earlier copy):
            # sealed names are unique, so only a recorded digest can say otherwise,
            # and the digest of the source decides that below.
            return _Plan(seg, rel)
        if named is not None:
            obj = forked_object(seg.topic, name, self.generation)
            return _Plan(seg, obj, upload=Upload(seg.pinned_path, obj, seg.size), forked=True)
        return _Plan(seg, rel, upload=Upload(seg.pinned_path, rel, seg.size))

    def _plan_active(self, seg: SourceSegment) -> _Plan:
        name = seg.name.filename
        rel = segment_object(seg.topic, name)
        if seg.size == 0:
            return _Plan(seg, None)
        prev = self.prev.segment(seg.topic, name) if self.prev else None
        if prev is not None and not prev.sealed and self._same_history(seg, prev):
            if prev.object is None:
                return _Plan(seg, rel, upload=Upload(seg.pinned_path, rel, seg.size))
            on_target = self.listing.get(prev.object, -1)
            if seg.size == prev.size and on_target >= prev.size:
                return _Plan(seg, prev.object, entry=prev)
            keep = prev.size if on_target >= prev.size else 0
            return _Plan(seg, prev.object, upload=Upload(seg.pinned_path, prev.object, seg.size, keep))
        if prev is not None or rel in self.known_objects():
            # The source lost a tail it had shipped (a crash before a sync) and
            # wrote other batches since: never mix two histories in one file.
            obj = forked_object(seg.topic, name, self.generation)
            return _Plan(seg, obj, upload=Upload(seg.pinned_path, obj, seg.size), forked=True)
        return _Plan(seg, rel, upload=Upload(seg.pinned_path, rel, seg.size))

    @staticmethod
    def _same_history(seg: SourceSegment, prev: SegmentEntry) -> bool:
        """Is the batch last shipped from this active segment still there, unchanged?"""
        if seg.size < prev.size:
            return False
        if prev.batches == 0 or prev.last_batch_pos is None:
            return prev.size == 0
        hdr = seg.header_at(prev.last_batch_pos)
        return hdr is not None and hdr.header_crc == prev.last_batch_crc and \
            hdr.base_offset == prev.last_offset

    # -- the work --------------------------------------------------------------------

    def run(self) -> ShipResult:
        self._load_history()
        plans = [self._plan_sealed(s) if s.sealed else self._plan_active(s)
                 for t in self.snap.topics for s in t.segments]
        # Sealed segments first, then the active prefixes (what changes last goes last).
        uploads = [p.upload for p in plans if p.upload and p.seg.sealed] + \
                  [p.upload for p in plans if p.upload and not p.seg.sealed]
        todo = [p for p in plans if p.entry is None]
        total = sum(u.length - u.keep for u in uploads)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lance-dr-digest") as pool:
            # Digests and batch scans of the source run while the bytes travel.
            described = {id(p): pool.submit(describe_segment, p.seg, p.object) for p in todo}
            with self.progress(total) as advance:
                self.target.upload(uploads, progress=advance, bwlimit=self.bwlimit)
            for p in todo:
                p.entry = described[id(p)].result()
        for p in todo:
            if p.upload is None and p.object is not None:
                named = self.known_objects().get(p.object)
                if named is not None and named != (p.entry.size, p.entry.blake3):
                    # A sealed file of that name with other bytes is on record: keep both.
                    obj = forked_object(p.seg.topic, p.seg.name.filename, self.generation)
                    self.target.upload([Upload(p.seg.pinned_path, obj, p.seg.size)], bwlimit=self.bwlimit)
                    p.entry = _with_object(p.entry, obj)
                    p.upload, p.forked = Upload(p.seg.pinned_path, obj, p.seg.size), True
        manifest = self._manifest(plans)
        result = ShipResult(self.target.url, None, self.latest, snapshot_at_ns=self.snap.taken_at_ns,
                            topics={t.name: t.high for t in manifest.topics})
        result.uploaded_files = sum(1 for p in plans if p.upload)
        result.uploaded_bytes = total
        result.skipped_files = sum(1 for p in plans if not p.upload)
        result.forked = [p.object for p in plans if p.forked]
        if self.prev is not None and manifest.same_data(self.prev) and not uploads:
            return result
        self._write_small_files(manifest)
        self._publish(manifest)
        result.generation = result.latest = manifest.generation
        result.pruned_files = self._prune()
        return result

    def _manifest(self, plans: list[_Plan]) -> Manifest:
        by_seg = {id(p.seg): p.entry for p in plans}
        topics = [TopicEntry(t.name, t.id, t.metadata, [by_seg[id(s)] for s in t.segments])
                  for t in self.snap.topics]
        files = [FileEntry.of(path, raw) for path, raw in sorted(self.snap.files.items())]
        source = {"host": socket.gethostname(), "data_dir": self.snap.data_dir}
        return Manifest(self.generation, time.time_ns(), self.snap.taken_at_ns, source,
                        self.snap.node, topics, files)

    def _write_small_files(self, manifest: Manifest) -> None:
        """Mirror node.json, metadata and offsets at their own paths, so the target reads like a
        data directory; the manifest's embedded copies stay the authority."""
        for f in manifest.files:
            old = self.prev.file(f.path) if self.prev else None
            if old is None or old.blake3 != f.blake3 or self.listing.get(f.path) != f.size:
                self.target.write(f.path, f.raw())

    def _publish(self, manifest: Manifest) -> None:
        here = self.target.list()
        for path, entry in manifest.objects().items():
            size = here.get(path)
            if size is None or size < entry.size or (entry.sealed and size != entry.size):
                raise TargetError(self.target.url, f"after the upload it holds {size} bytes, expected "
                                  f"{entry.size}; LATEST still names generation {self.latest}", path=path)
        path = manifest_path(manifest.generation)
        data = manifest.encode()
        self.target.write(path, data)
        if self.target.read(path) != data:
            raise TargetError(self.target.url, "the manifest read back differs from what was written; "
                              f"LATEST still names generation {self.latest}", path=path)
        # Everything the generation names is in place: only now may LATEST move.
        self.target.write(LATEST, encode_latest(manifest.generation))
        if read_latest(self.target) != manifest.generation:
            raise TargetError(self.target.url, f"LATEST did not take generation {manifest.generation}",
                              path=LATEST)

    def _prune(self) -> int:
        gens = list_generations(self.target)
        published = [g for g in gens if g.published and g.manifest is not None]
        kept = published[-self.keep:]
        named = {LATEST}
        for g in kept:
            named.add(g.path)
            named.update(g.manifest.objects())
            named.update(f.path for f in g.manifest.files)
        doomed = [p for p in self.target.list()
                  if p not in named and p.split("/", 1)[0] in PRUNED_FOLDERS]
        self.target.delete(doomed)
        return len(doomed)


def describe_segment(seg: SourceSegment, obj: str | None) -> SegmentEntry:
    """The manifest entry of a source segment: scanned by lance_store, digested by BLAKE3."""
    scan = scan_segment(seg.pinned_path, seg.name.base, length=seg.size)
    if scan.valid_end != seg.size:
        what = (f"{seg.path}: invalid at offset {seg.name.base + scan.valid_end} (byte {scan.valid_end} "
                f"of {seg.size}): {scan.error}")
        if seg.sealed:
            raise SourceDamage(what + "; not shipped (restore that segment from an earlier generation)")
        raise SourceChanged(what)
    digest = digest_fd(seg.fd, seg.size)
    b = scan.batches
    n = len(b.pos)
    active = not seg.sealed and n > 0
    return SegmentEntry(
        name=seg.name.filename, object=obj, size=seg.size, blake3=digest, sealed=seg.sealed,
        first_offset=seg.name.base, end_offset=seg.name.base + seg.size,
        last_offset=int(b.base_offset[-1]) if n else None,
        first_ts=int(b.first_ts[0]) if n else None, last_ts=int(b.last_ts[-1]) if n else None,
        batches=n, last_batch_pos=int(b.pos[-1]) if active else None,
        last_batch_crc=int(b.header_crc[-1]) if active else None, source_mtime_ns=seg.mtime_ns)


def _with_object(entry: SegmentEntry, obj: str) -> SegmentEntry:
    return replace(entry, object=obj)
