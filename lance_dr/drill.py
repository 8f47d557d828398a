"""A DR drill: restore a generation into a scratch folder, verify it, read every topic end to
end with lance_store, report RTO and RPO, and clean up.

It never writes to the target or to any data directory but its own scratch one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field

import lance_store
from lance_store.verify import verify_path

from .generations import load_manifest
from .lag import recovery_point_lag
from .progress import ProgressBar, no_bar
from .restore import restore
from .targets.base import Target


@dataclass
class DrillReport:
    url: str
    generation: int
    ok: bool
    rto_seconds: float              # start to a verified, openable data directory
    restore_seconds: float
    read_seconds: float
    rpo_seconds: float              # age of the newest shipped snapshot (or source lag when known)
    newest_record_age_seconds: float | None
    lag_bytes: int | None           # bytes the source holds beyond the copy (with --data-dir)
    bytes: int
    records: int
    topics: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def drill(target: Target, *, generation: int | None = None, data_dir=None, workdir: str | None = None,
          progress: ProgressBar = no_bar) -> DrillReport:
    started = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="lance-dr-drill-", dir=workdir)
    dest = os.path.join(scratch, "data")
    try:
        res = restore(target, dest, generation=generation, progress=progress)
        restored = time.perf_counter()
        problems = [str(f) for f in verify_path(dest).findings if f.severity == "damage"]
        verified = time.perf_counter()
        topics, records, nbytes = {}, 0, 0
        with lance_store.open(dest, readonly=True) as store:
            for topic in store.topics():
                count, last = 0, None
                for chunk in topic.scan():
                    count += len(chunk)
                    if len(chunk):
                        last = int(chunk.offsets[-1])
                expected = res.topics[topic.name]["high"]
                if topic.high_watermark != expected:
                    problems.append(f"topic {topic.name!r}: reads end at {topic.high_watermark}, "
                                    f"expected {expected}")
                topics[topic.name] = {"records": count, "low": topic.low_watermark,
                                      "high": topic.high_watermark, "last_record_offset": last}
                records += count
                nbytes += topic.high_watermark - topic.low_watermark
        read_done = time.perf_counter()
        manifest = load_manifest(target, res.generation)
        now = time.time_ns()
        rpo = (now - manifest.snapshot_at_ns) / 1e9
        lag_bytes = None
        if data_dir is not None:
            lag = recovery_point_lag(data_dir, manifest, now_ns=now)
            rpo, lag_bytes = lag.seconds, lag.bytes
        newest = manifest.newest_ts
        return DrillReport(
            target.url, res.generation, not problems, rto_seconds=verified - started,
            restore_seconds=restored - started, read_seconds=read_done - verified, rpo_seconds=rpo,
            newest_record_age_seconds=None if newest is None else (now - newest) / 1e9,
            lag_bytes=lag_bytes, bytes=nbytes, records=records, topics=topics, problems=problems)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
