"""Planning and running repairs: cut torn active tails, rebuild indexes.

A repair never removes a valid batch; damage inside a sealed segment is
reported as unrepairable (the cure is a DR copy), never "fixed" by cutting.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass

from . import index as sparse_index
from .recovery import cut_tail, index_entries
from .segment import naming
from .segment.reader import scan_segment
from .store import DirectoryLock, find_data_dir
from .verify import DAMAGE, segment_paths, verify_path


@dataclass(frozen=True)
class Action:
    kind: str        # cut_tail | rebuild_index | unrepairable
    path: str
    detail: str
    size: int = 0    # for cut_tail: the length to keep

    def __str__(self) -> str:
        return {"cut_tail": f"cut {self.path} to {self.size} bytes ({self.detail})",
                "rebuild_index": f"rebuild {self.path} ({self.detail})",
                "unrepairable": f"leave {self.path}: {self.detail}"}[self.kind]

    def as_dict(self) -> dict:
        return asdict(self)


def plan_repair(path) -> list[Action]:
    report = verify_path(path)
    actions: list[Action] = []
    for topic in report.topics:
        for seg in topic.segments:
            if seg.status == "active" and seg.valid_bytes < seg.file_size:
                actions.append(Action("cut_tail", seg.path, f"{seg.file_size - seg.valid_bytes} bytes "
                                      "past the last valid batch", seg.valid_bytes))
    for f in report.findings:
        if f.path.endswith(naming.INDEX_SUFFIX):
            actions.append(Action("rebuild_index", f.path, f.what))
        elif f.severity == DAMAGE and f.path.endswith(naming.SEGMENT_SUFFIX):
            actions.append(Action("unrepairable", f.path, f.what))
        elif f.severity == DAMAGE:
            actions.append(Action("unrepairable", f.path, f.what))
    return actions


def _rebuild(idx_path: str) -> int:
    folder = os.path.dirname(idx_path)
    stem = os.path.basename(idx_path)[: -len(naming.INDEX_SUFFIX)]
    name = naming.parse(stem + naming.SEGMENT_SUFFIX)
    seg_path = os.path.join(folder, name.filename)
    entries = index_entries(scan_segment(seg_path, name.base))
    sparse_index.write_atomic(idx_path, entries)
    return len(entries)


def run_repair(path, plan: list[Action]) -> list[Action]:
    """Carry out the plan under the data directory's write lock."""
    done = []
    with _locked(path):
        for a in plan:
            if a.kind == "cut_tail":
                cut_tail(a.path, a.size)
                done.append(a)
            elif a.kind == "rebuild_index":
                _rebuild(a.path)
                done.append(a)
    return done


@contextlib.contextmanager
def _locked(path):
    """Hold the data directory's lock (when PATH is inside one) so no broker writes meanwhile."""
    root = find_data_dir(path)
    lock = DirectoryLock(root) if root else None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def reindex_path(path) -> list[tuple[str, int]]:
    """Rebuild every sealed segment's index under a data dir, topic or segment path."""
    path = os.path.abspath(path)
    folders = []
    if os.path.isfile(path):
        name = naming.parse(os.path.basename(path))
        if name is None or not name.sealed or name.legacy:
            raise ValueError(f"{path}: only sealed segments have an index")
        return [(p, _rebuild(p)) for p in [os.path.join(os.path.dirname(path), name.index_filename)]]
    seg_root = os.path.join(path, "segments")
    if os.path.isdir(seg_root):
        folders = [os.path.join(seg_root, d) for d in sorted(os.listdir(seg_root))
                   if os.path.isdir(os.path.join(seg_root, d)) and not d.startswith(".")]
    else:
        folders = [path]
    out = []
    with _locked(path):
        for folder in folders:
            for name, _seg_path in segment_paths(folder):
                if name.sealed and not name.legacy:
                    idx = os.path.join(folder, name.index_filename)
                    out.append((idx, _rebuild(idx)))
    return out
