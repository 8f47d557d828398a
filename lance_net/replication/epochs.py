"""A topic's leader-epochs file (FORMAT.md section 10) and where two logs stop agreeing.

Owns `segments/<topic>/epochs`: lines `<epoch> <start_offset>`, ascending, written
tmp + fsync + rename; it never touches segment files.

Why the divergence point is right: every entry (E, s) of a node's file says the bytes from
s up to the next entry came from the leader of epoch E, and a node accepts a leader's
stream only after cutting its log to where it agrees with that leader. So two logs that
both hold epoch E agree up to the smaller of their two ends of E, and the largest epoch
they share marks the last byte they certainly have in common.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from lance_store import fsutil

EPOCHS = "epochs"
# Leader epochs are etcd revisions, never 0: 0 names the bytes a log held before it had any
# leader (a data directory the cluster was seeded from).
PRE_CLUSTER = 0


class EpochsError(ValueError):
    """An epochs file that breaks the format, or an entry that would break it."""


@dataclass(frozen=True, slots=True, order=True)
class EpochEntry:
    epoch: int
    start_offset: int


def parse(text: str, *, path: str = EPOCHS) -> list[EpochEntry]:
    entries: list[EpochEntry] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise EpochsError(f"{path} line {lineno}: expected '<epoch> <start_offset>', found {line!r}")
        entry = EpochEntry(int(parts[0]), int(parts[1]))
        if entries and (entry.epoch <= entries[-1].epoch or entry.start_offset < entries[-1].start_offset):
            raise EpochsError(f"{path} line {lineno}: expected epoch above {entries[-1].epoch} from "
                              f"offset {entries[-1].start_offset} on, found {line!r}")
        entries.append(entry)
    return entries


def format_entries(entries: Sequence[EpochEntry]) -> bytes:
    return "".join(f"{e.epoch} {e.start_offset}\n" for e in entries).encode()


def end_of(entries: Sequence[EpochEntry], epoch: int, log_end: int) -> int:
    """Where the log's part written in `epoch` ends: the next entry's start, or the log's end."""
    for i, e in enumerate(entries):
        if e.epoch == epoch:
            return entries[i + 1].start_offset if i + 1 < len(entries) else log_end
    raise KeyError(epoch)


def divergence_point(leader: Sequence[EpochEntry], leader_end: int,
                     follower: Sequence[EpochEntry], follower_end: int, *,
                     seeded: bool = False) -> int:
    """The offset up to which the follower's log certainly equals the leader's.

    The end of the last epoch both files hold (the smaller of the two ends), capped by the
    follower's end; 0 when they share no epoch. `seeded`: both logs were restored from the
    copy the cluster was seeded from, so the bytes before each file's first entry (written
    before the cluster existed) count as one shared epoch, PRE_CLUSTER.
    """
    if seeded:
        leader = [EpochEntry(PRE_CLUSTER, 0), *leader]
        follower = [EpochEntry(PRE_CLUSTER, 0), *follower]
    shared = {e.epoch for e in leader} & {e.epoch for e in follower}
    if not shared:
        return 0
    epoch = max(shared)
    return min(end_of(leader, epoch, leader_end), end_of(follower, epoch, follower_end), follower_end)


class EpochsFile:
    """The epochs file of one topic folder, loaded once and rewritten on every change."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, EPOCHS)
        try:
            with open(self.path, encoding="ascii") as f:
                self.entries = parse(f.read(), path=self.path)
        except FileNotFoundError:
            self.entries = []

    def first_start(self, log_end: int) -> int:
        """Where the first leader began: the bytes below predate the cluster."""
        return self.entries[0].start_offset if self.entries else log_end

    @property
    def last_epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else 0

    def end_of(self, epoch: int, log_end: int) -> int:
        return end_of(self.entries, epoch, log_end)

    def append(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` writes from `start_offset` on; durable before it returns."""
        if self.entries:
            last = self.entries[-1]
            if epoch <= last.epoch or start_offset < last.start_offset:
                raise EpochsError(f"{self.path}: new entry ({epoch} {start_offset}) must follow "
                                  f"({last.epoch} {last.start_offset}) with a higher epoch "
                                  "and no lower offset")
        self._write(self.entries + [EpochEntry(epoch, start_offset)])

    def truncate(self, offset: int) -> None:
        """Forget the epochs that start at or after `offset` (the log is being cut there)."""
        keep = [e for e in self.entries if e.start_offset < offset]
        if len(keep) != len(self.entries):
            self._write(keep)

    def _write(self, entries: list[EpochEntry]) -> None:
        fsutil.write_atomic(self.path, format_entries(entries))
        self.entries = entries
