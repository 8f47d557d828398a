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
from .generations import load_manifest, read_latest
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
         progress: ProgressBar = no_bar, manifests: dict | None = None) -> ShipResult:
    """Ship the data directory's current state as a new generation (if anything changed).

    `manifests` may carry manifests read by an earlier ship to the same target
    (generations are immutable), sparing the reads; `watch` passes one along.
    """
    if keep < 1:
        raise ValueError(f"keep {keep}: at least the newest generation must be kept")
    started = time.perf_counter()
    for attempt in range(_ATTEMPTS):
        try:
            with take_snapshot(data_dir) as snap:
                result = _Shipment(snap, target, keep, bwlimit, progress,
                                   manifests if manifests is not None else {}).run()
            result.seconds = time.perf_counter() - started
            return result
        except SourceChanged:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class _Shipment:
    def __init__(self, snap: Snapshot, target: Target, keep: int, bwlimit: int | None,
                 progress: ProgressBar, manifests: dict):
        self.snap = snap
        self.manifests = manifests
        self.target = target
        self.keep = keep
        self.bwlimit = bwlimit
        self.progress = progress
        self._known: dict[str, tuple[int, str]] | None = None

    # -- what the target holds -------------------------------------------------------

    def _load_history(self) -> None:
        self.listing = self.target.list()
        self.latest = read_latest(self.target) if LATEST in self.listing else None
        numbers = [g for g in map(generation_of, self.listing) if g is not None]
        self.generation = max(numbers + [self.latest or 0]) + 1
        # A damaged manifest is trusted for nothing: the new generation is then
        # built as if the target were empty (`lance-dr verify` reports the damage).
        self.prev = self._manifest_of(self.latest) if self.latest is not None else None

    def _manifest_of(self, generation: int) -> Manifest | None:
        """A manifest on the target, None when it is absent or damaged; cached by path and size."""
        path = manifest_path(generation)
        key = (path, self.listing.get(path))
        if key not in self.manifests:
            try:
                self.manifests[key] = load_manifest(self.target, generation)
            except ManifestError:
                self.manifests[key] = None
        return self.manifests[key]

    def _generations(self, listing: dict[str, int]) -> list[int]:
        return sorted(g for g in map(generation_of, listing) if g is not None)

    def known_objects(self) -> dict[str, tuple[int, str]]:
        """(size, digest) of every object some manifest on the target names."""
        if self._known is None:
            self._known = {}
            for number in self._generations(self.listing):
                manifest = self._manifest_of(number)
                if manifest is not None:
                    for path, e in manifest.objects().items():
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
            keep = prev.size if on_target >= prev.size and self.target.appendable else 0
            return _Plan(seg, prev.object, upload=Upload(seg.pinned_path, prev.object, seg.size, keep))
        if prev is not None or rel in self.known_objects():
            # The source lost a tail it had shipped (a crash before a sync) and
            # wrote other batches since: never mix two histories in one file.
            obj = forked_object(seg.topic, name, self.generation)
            return _Plan(seg, obj, upload=Upload(seg.pinned_path, obj, seg.size), forked=True)
        return _Plan(seg, rel, upload=Upload(seg.pinned_path, rel, seg.size))

    def _check_same_node(self) -> None:
        """One target holds the copy of one node: never mix two nodes' segments."""
        if self.prev is None:
            return
        theirs = (self.prev.node.get("cluster_id"), self.prev.node.get("node_id"))
        ours = (self.snap.node.get("cluster_id"), self.snap.node.get("node_id"))
        if theirs != ours:
            raise DRError(f"target {self.target.url} holds a copy of cluster {theirs[0]} node {theirs[1]}, "
                          f"but {self.snap.data_dir} is cluster {ours[0]} node {ours[1]}; ship each node "
                          "to a target of its own")

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
        self._check_same_node()
        plans = [self._plan_sealed(s) if s.sealed else self._plan_active(s)
                 for t in self.snap.topics for s in t.segments]
        # Sealed segments first, then the active prefixes (what changes last goes last).
        uploads = [replace(p.upload, listed=self.listing.get(p.upload.path, -1))
                   for p in sorted(plans, key=lambda p: not p.seg.sealed) if p.upload]
        todo = [p for p in plans if p.entry is None]
        total = sum(u.length - u.keep for u in uploads)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lance-dr-digest") as pool:
            # Digests and batch scans of the source run while the bytes travel.
            described = {id(p): pool.submit(describe_segment, p.seg, p.object) for p in todo}
            try:
                with self.progress(total) as advance:
                    self.target.upload(uploads, progress=advance, bwlimit=self.bwlimit)
            except BaseException:
                for future in described.values():
                    future.cancel()
                raise
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
        here = self._publish(manifest)
        result.generation = result.latest = manifest.generation
        result.pruned_files = self._prune(here, manifest.generation)
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
        changed = {}
        for f in manifest.files:
            old = self.prev.file(f.path) if self.prev else None
            if old is None or old.blake3 != f.blake3 or self.listing.get(f.path) != f.size:
                changed[f.path] = f.raw()
        self.target.write_many(changed)

    def _publish(self, manifest: Manifest) -> dict[str, int]:
        """Write the manifest, then LATEST; returns the target's listing as of then."""
        here = self.target.list()
        for path, entry in manifest.objects().items():
            size = here.get(path)
            if size is None or size < entry.size or (entry.sealed and size != entry.size):
                raise TargetError(self.target.url, f"after the upload it holds {size} bytes, expected "
                                  f"{entry.size}; LATEST still names generation {self.latest}", path=path)
        path = manifest_path(manifest.generation)
        data = manifest.encode()
        self.target.write(path, data)
        if not self.target.atomic_publish and self.target.read(path) != data:
            raise TargetError(self.target.url, "the manifest read back differs from what was written; "
                              f"LATEST still names generation {self.latest}", path=path)
        here[path] = len(data)
        self.manifests[(path, len(data))] = manifest
        # Everything the generation names is in place: only now may LATEST move.
        self.target.write(LATEST, encode_latest(manifest.generation))
        if not self.target.atomic_publish and read_latest(self.target) != manifest.generation:
            raise TargetError(self.target.url, f"LATEST did not take generation {manifest.generation}",
                              path=LATEST)
        here[LATEST] = len(encode_latest(manifest.generation))
        return here

    def _prune(self, here: dict[str, int], latest: int) -> int:
        """Delete what no kept generation names: the newest `keep` loadable generations up to
        LATEST are kept; older, damaged and unfinished manifests go too."""
        self.listing = here
        kept: list[Manifest] = []
        for number in reversed(self._generations(here)):
            if number > latest or len(kept) == self.keep:
                continue
            manifest = self._manifest_of(number)
            if manifest is not None:
                kept.append(manifest)
        named = {LATEST}
        for m in kept:
            named.add(manifest_path(m.generation))
            named.update(m.objects())
            named.update(f.path for f in m.files)
        doomed = [p for p in here if p not in named and p.split("/", 1)[0] in PRUNED_FOLDERS]
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
