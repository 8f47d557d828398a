"""The one interface every DR target implements, and what a backend declares it can do.

A target is a tree of objects named by '/'-separated paths relative to its root;
nothing here knows about manifests, segments or generations.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

Progress = Callable[[int], None]


def _no_progress(_n: int) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Upload:
    """Send the first `length` bytes of local file `source` to object `path`.

    Afterwards the object holds exactly those bytes. `keep` is how many of its
    first bytes the caller knows are already identical on the target (an
    earlier ship sent them); an appendable target sends only the rest.
    `listed` is the object's size in a listing the caller just made (-1: absent),
    sparing a backend that needs it a round trip; None when unknown.
    """

    source: str
    path: str
    length: int
    keep: int = 0
    listed: int | None = None


class Target(abc.ABC):
    """A place shipped copies live: a local folder, an rsync module, an object store.

    Capabilities are class attributes, so callers (and the conformance suite in
    `lance_dr.testing.targets`) can ask before relying on them:

    - `ranged_reads`: reading part of an object costs only that part, so an
      interrupted download resumes at a byte offset;
    - `appendable`: an object can grow without resending its prefix (an active
      segment ships only its new batches);
    - `atomic_publish`: `write()` and `upload()` never leave a partly written
      object visible under its final name.
    """

    scheme: ClassVar[str] = ""
    ranged_reads: ClassVar[bool] = False
    appendable: ClassVar[bool] = False
    atomic_publish: ClassVar[bool] = False

    def __init__(self, url: str):
        self.url = url

    @property
    def capabilities(self) -> dict[str, bool]:
        return {"ranged_reads": self.ranged_reads, "appendable": self.appendable,
                "atomic_publish": self.atomic_publish}

    @abc.abstractmethod
    def list(self, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix` (recursively) as {path: size}; {} when the root is absent."""

    def stat(self, path: str) -> int | None:
        """The object's size, or None when it is absent."""
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        return self.list(folder).get(path)

    @abc.abstractmethod
    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of an object (to its end when `end` is None).

        Raises ObjectMissing when the object is absent.
        """

    @abc.abstractmethod
    def write(self, path: str, data: bytes) -> None:
        """Publish a small object whole (manifests, LATEST, metadata)."""

    def write_many(self, objects: dict[str, bytes]) -> None:
        """Publish several small objects, each whole (one round trip where the backend can)."""
        for path, data in objects.items():
            self.write(path, data)

    @abc.abstractmethod
    def upload(self, items: Iterable[Upload], *, progress: Progress = _no_progress,
               bwlimit: int | None = None) -> None:
        """Send local files; durable on the target when this returns.

        An upload interrupted earlier resumes where the backend can check that
        what arrived is right (a verified partial file, rsync --append-verify).
        """

    @abc.abstractmethod
    def download(self, path: str, dest: str, length: int, *, progress: Progress = _no_progress) -> None:
        """Make local file `dest` hold the first `length` bytes of the object.

        A `dest` already holding a prefix (an interrupted download) is
        continued, not restarted; callers verify the digest afterwards.
        Raises ObjectMissing when absent, TargetError when shorter than `length`.
        """

    @abc.abstractmethod
    def delete(self, paths: Iterable[str]) -> None:
        """Remove these objects; absent ones are not an error."""

    def local_path(self, path: str) -> str | None:
        """A local file holding the object, when the target is a local folder (no copy needed)."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def check_path(path: str) -> str:
    """Object paths are relative and never climb out of the root."""
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in path.split("/")):
        raise ValueError(f"object path {path!r}: expected a relative path without '.', '..' or '//'")
    return path
