"""Access tokens: who may read or write which topics (LWP.md section 4).

Owns the token list format and the access decision; the connection only asks `Grant.allows`.

A token is a table with `token` (the secret), and optionally `name` (shown in
logs), `topics` (glob patterns, default `["*"]`), `read` and `write` (booleans,
default true). They come from `[[auth.tokens]]` in lance.toml and from
`[auth] tokens_file`: a TOML file (`.toml`) of `[[tokens]]` tables, or a JSON file
(`.json`) holding a list of such objects (or `{"tokens": [...]}`). Auth is on when at least one
token is configured.
"""
from __future__ import annotations

import fnmatch
import hmac
import json
import os
import tomllib
from dataclasses import dataclass

from lance_store.settings import ConfigError

READ = "read"
WRITE = "write"

_FIELDS = {"token", "name", "topics", "read", "write"}


@dataclass(frozen=True)
class Grant:
    """What one token may do."""

    name: str
    topics: tuple[str, ...] = ("*",)
    read: bool = True
    write: bool = True

    def allows(self, topic: str, access: str) -> bool:
        if not (self.read if access == READ else self.write):
            return False
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.topics)

    def sees(self, topic: str) -> bool:
        """Whether the topic is listed to this token at all (it may read or write it)."""
        return self.allows(topic, READ) or self.allows(topic, WRITE)


OPEN = Grant("anonymous")
"""The grant of every connection when auth is off."""


class TokenBook:
    """The configured tokens; `authenticate(secret)` is the grant or None."""

    def __init__(self, grants: dict[str, Grant]):
        self._grants = grants

    @property
    def enabled(self) -> bool:
        return bool(self._grants)

    def __len__(self) -> int:
        return len(self._grants)

    def authenticate(self, secret: str) -> Grant | None:
        found = None
        supplied = secret.encode()
        # Every token is compared, in constant time, so timing tells nothing about which matched.
        for token, grant in self._grants.items():
            if hmac.compare_digest(token.encode(), supplied):
                found = grant
        return found

    @classmethod
    def from_settings(cls, auth: dict, config_dir: str = ".") -> TokenBook:
        grants: dict[str, Grant] = {}
        inline = auth.get("tokens", [])
        if not isinstance(inline, list):
            raise ConfigError(f"auth.tokens: expected a list of tables, found {inline!r}")
        for index, entry in enumerate(inline):
            _add(grants, entry, f"auth.tokens[{index}]")
        path = auth.get("tokens_file", "")
        if path:
            if not os.path.isabs(path):
                path = os.path.join(config_dir, path)
            for index, entry in enumerate(load_tokens_file(path)):
                _add(grants, entry, f"{path}: tokens[{index}]")
        return cls(grants)


def load_tokens_file(path: str) -> list:
    """The token entries of a tokens file: JSON (`.json`), TOML (`.toml`), else whichever parses."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"auth.tokens_file: cannot read {path}: {exc.strerror}") from None
    kind = "JSON" if path.endswith(".json") else "TOML" if path.endswith(".toml") else None
    try:
        if kind == "JSON":
            data = json.loads(raw)
        elif kind == "TOML":
            data = tomllib.loads(raw.decode())
        else:
            try:
                data = json.loads(raw)
            except ValueError:
                data = tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"auth.tokens_file {path}: not valid {kind or 'JSON or TOML'}: "
                          f"{exc}") from None
    if isinstance(data, dict):
        data = data.get("tokens")
    if not isinstance(data, list):
        raise ConfigError(f"auth.tokens_file {path}: expected a list of tokens "
                          f"(a JSON list, or [[tokens]] tables)")
    return data


def _add(grants: dict[str, Grant], entry, where: str) -> None:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table, found {entry!r}")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                          f"(expected {', '.join(sorted(_FIELDS))})")
    token = entry.get("token")
    if not isinstance(token, str) or not token:
        raise ConfigError(f"{where}.token: expected a non-empty string")
    topics = entry.get("topics", ["*"])
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
        raise ConfigError(f"{where}.topics: expected a list of glob patterns, found {topics!r}")
    flags = {}
    for key in (READ, WRITE):
        value = entry.get(key, True)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: expected true or false, found {value!r}")
        flags[key] = value
    if token in grants:
        raise ConfigError(f"{where}: the same token is configured twice")
    name = entry.get("name") or f"token-{len(grants) + 1}"
    grants[token] = Grant(str(name), tuple(topics), flags[READ], flags[WRITE])
