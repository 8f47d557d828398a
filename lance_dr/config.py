"""Finding a target from what an operator typed: a name under [dr.targets.<name>] in lance.toml,
or a URL / path.

lance.toml is read through `lance_store.settings` (--config, else $LANCE_CONFIG, else
./lance.toml); a target section holds `url` and optionally `options` (passed to the
backend, e.g. fsspec storage options), `bwlimit` and `keep`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lance_store.settings import ConfigError

from .targets import open_target
from .targets.base import Target
from .throttle import parse_rate

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_KEYS = {"url", "options", "bwlimit", "keep"}


@dataclass
class TargetSpec:
    url: str
    name: str | None = None
    options: dict = field(default_factory=dict)
    bwlimit: int | None = None
    keep: int | None = None

    def open(self) -> Target:
        return open_target(self.url, self.options)


def resolve(spec: str, cfg: dict) -> TargetSpec:
    """A configured target by name, else `spec` itself as a URL or path.

    A bare word (no '/', ':' or '.') must be a configured name, so a typo never
    ships into a new folder of that name; write ./NAME for a local folder.
    """
    targets = (cfg.get("dr") or {}).get("targets") or {}
    if spec in targets:
        return _from_config(spec, targets[spec], cfg.get("_source", "lance.toml"))
    if _NAME.match(spec):
        known = ", ".join(sorted(targets)) or "none"
        source = cfg.get("_source") or "no config file found"
        raise ConfigError(f"no target named {spec!r} in [dr.targets] ({source}; configured: {known}); "
                          f"give a URL, or ./{spec} for a local folder")
    return TargetSpec(spec)


def _from_config(name: str, section, source: str) -> TargetSpec:
    where = f"{source}: [dr.targets.{name}]"
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(section) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]} (known: {', '.join(sorted(_KEYS))})")
    url = section.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: needs url = \"...\"")
    options = section.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options must be a table")
    keep = section.get("keep")
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ConfigError(f"{where}: keep must be a positive integer, found {keep!r}")
    try:
        bwlimit = parse_rate(section.get("bwlimit"))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return TargetSpec(url, name, options, bwlimit, keep)
