"""Segment and index file names (FORMAT.md sections 1 and 9).

`<base:20>_<t0>.lnc` is active, `<base:20>_<t0>-<t1>.lnc` sealed; any other
digit count in the base marks an upstream (legacy) segment.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SEGMENT_SUFFIX = ".lnc"
INDEX_SUFFIX = ".idx"
BASE_DIGITS = 20

_NAME = re.compile(r"^(\d+)_(\d+)(?:-(\d+))?\.lnc$")


@dataclass(frozen=True, slots=True, order=True)
class SegmentName:
    base: int
    t0: int
    t1: int | None = None
    legacy: bool = False

    @property
    def sealed(self) -> bool:
        return self.t1 is not None

    @property
    def stem(self) -> str:
        base = f"{self.base:0{BASE_DIGITS}d}" if not self.legacy else str(self.base)
        return f"{base}_{self.t0}" + (f"-{self.t1}" if self.t1 is not None else "")

    @property
    def filename(self) -> str:
        return self.stem + SEGMENT_SUFFIX

    @property
    def index_filename(self) -> str:
        return self.stem + INDEX_SUFFIX

    def sealed_as(self, t1: int) -> "SegmentName":
        return SegmentName(self.base, self.t0, t1, self.legacy)


def parse(filename: str) -> SegmentName | None:
    """The name's parts, or None for a file that is not a segment."""
    m = _NAME.match(filename)
    if not m:
        return None
    base_s, t0, t1 = m.groups()
    return SegmentName(int(base_s), int(t0), int(t1) if t1 else None, len(base_s) != BASE_DIGITS)


def active(base: int, t0: int) -> SegmentName:
    return SegmentName(base, t0)
