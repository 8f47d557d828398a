"""The generations on a target: which manifests exist, which one LATEST names, and loading them.

Read-only over a Target; publishing (manifest, then LATEST) and pruning belong to `ship`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ManifestError, NothingShipped, ObjectMissing
from .manifest import LATEST, MANIFESTS, Manifest, decode_latest, generation_of, manifest_path
from .targets.base import Target


@dataclass
class Generation:
    number: int
    path: str
    size: int
    published: bool            # at or below the generation LATEST names
    latest: bool
    manifest: Manifest | None = None
    problem: str | None = None  # why the manifest could not be loaded


def read_latest(target: Target) -> int | None:
    """The generation LATEST names, None when nothing was ever published."""
    try:
        data = target.read(LATEST)
    except ObjectMissing:
        return None
    return decode_latest(data, f"{target.url}/{LATEST}")


def load_manifest(target: Target, generation: int) -> Manifest:
    path = manifest_path(generation)
    where = f"{target.url}/{path}"
    try:
        data = target.read(path)
    except ObjectMissing:
        raise ManifestError(f"{where}: generation {generation} has no manifest on the target") from None
    manifest = Manifest.decode(data, where)
    if manifest.generation != generation:
        raise ManifestError(f"{where}: names generation {manifest.generation}, expected {generation}")
    return manifest


def load_latest(target: Target) -> Manifest:
    """The manifest LATEST names; NothingShipped when there is none."""
    latest = read_latest(target)
    if latest is None:
        raise NothingShipped(f"target {target.url}: no {LATEST}, so no generation has been published "
                             "(run `lance-dr ship` first)")
    return load_manifest(target, latest)


def list_generations(target: Target, *, load: bool = True, listing: dict[str, int] | None = None
                     ) -> list[Generation]:
    """Every manifest on the target, oldest first, with its manifest loaded when it can be."""
    latest = read_latest(target)
    listing = target.list(MANIFESTS) if listing is None else listing
    out = []
    for path, size in sorted(listing.items()):
        number = generation_of(path)
        if number is None:
            continue
        gen = Generation(number, path, size, latest is not None and number <= latest, number == latest)
        if load:
            try:
                gen.manifest = load_manifest(target, number)
            except ManifestError as exc:
                gen.problem = str(exc)
        out.append(gen)
    return out
