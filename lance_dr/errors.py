"""Exceptions of the disaster-recovery toolkit.

Each names the target, the object or file, and what was expected and found;
all derive from `lance_store.LanceError`, so the CLIs report them the same way.
"""
from __future__ import annotations

from lance_store import LanceError


class DRError(LanceError):
    """Base of every error lance_dr raises on purpose."""


class TargetError(DRError):
    """A target could not be reached, or refused a read, write, list or delete."""

    def __init__(self, url: str, message: str, *, path: str | None = None):
        where = f"{url}/{path}" if path else url
        super().__init__(f"target {where}: {message}")
        self.url = url
        self.path = path


class ObjectMissing(TargetError):
    """An object a caller asked for is not on the target."""

    def __init__(self, url: str, path: str):
        super().__init__(url, "no such object", path=path)


class ManifestError(DRError):
    """A manifest or LATEST that cannot be trusted: unreadable, malformed, or its checksum fails."""


class NothingShipped(DRError):
    """The target holds no published generation (no LATEST)."""


class RestoreError(DRError):
    """A restore that cannot go on; the destination is left as it was found."""


class DamageError(DRError):
    """Verification found damage; `findings` lists each problem."""

    def __init__(self, message: str, findings: list):
        super().__init__(message)
        self.findings = findings


class SourceChanged(DRError):
    """A file of the data directory moved or vanished while it was read (a seal, retention)."""
