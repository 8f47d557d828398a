"""The one configuration file, `lance.toml`, that all three CLIs read.

Found by --config, else $LANCE_CONFIG, else ./lance.toml, else the defaults
below; flags override it. Unknown keys are errors that name the key.
"""
from __future__ import annotations

import copy
import os
import tomllib

from .config import StoreConfig

DEFAULTS: dict = {
    "node": {"id": 1, "data_dir": "./lance-data"},
    "network": {
        "listen": "127.0.0.1:1992",
        "http": "127.0.0.1:8080",
        "max_payload_size": 16 * 1024 * 1024 + 64 * 1024,
        "idle_timeout_s": 30,
        "drain_timeout_s": 25,
        "max_connections": 20000,
        "backpressure_bytes": 64 * 1024 * 1024,
    },
    "io": {
        "backend": "auto",
        "durability": "sync",
        "segment_max_bytes": 256 << 20,
        "index_interval_bytes": 4096,
        "sync_interval_ms": 100,
        "buffer_count": 4,
        "buffer_size": 8 << 20,
    },
    "numa": {"cpus": []},
    "replication": {
        "mode": "l1",
        "etcd": ["http://127.0.0.1:2379"],
        "cluster": "lance",
        "advertise": "127.0.0.1:1992",
        "members": [],
        "lease_ttl_s": 5,
        "lease_margin_ms": 500,
    },
    "auth": {"tokens_file": "", "tokens": []},
    "tls": {"cert": "", "key": "", "client_ca": ""},
    "retention": {"check_interval_s": 30},
    "dr": {"targets": {}},
}

# Sections whose keys are open-ended (named targets, token lists).
_OPEN_SECTIONS = {"dr", "auth"}


class ConfigError(ValueError):
    pass


def find_config(explicit: str | None = None) -> str | None:
    if explicit:
        if not os.path.exists(explicit):
            raise ConfigError(f"{explicit}: config file not found")
        return explicit
    env = os.environ.get("LANCE_CONFIG")
    if env:
        if not os.path.exists(env):
            raise ConfigError(f"{env} (from $LANCE_CONFIG): config file not found")
        return env
    return "lance.toml" if os.path.exists("lance.toml") else None


def _merge(base: dict, over: dict, where: str, path: str) -> None:
    for key, value in over.items():
        here = f"{where}.{key}" if where else key
        if key not in base:
            if where.split(".")[0] in _OPEN_SECTIONS:
                base[key] = value
                continue
            raise ConfigError(f"{path}: unknown setting [{where}] {key}" if where else
                              f"{path}: unknown section [{key}]")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {here} must be a table")
            _merge(base[key], value, here, path)
        else:
            if base[key] is not None and not isinstance(value, type(base[key])) and \
                    not (isinstance(base[key], int) and isinstance(value, int)):
                raise ConfigError(f"{path}: {here} must be {type(base[key]).__name__}, "
                                  f"found {type(value).__name__} {value!r}")
            base[key] = value


def load(explicit: str | None = None) -> dict:
    """The effective settings: defaults overlaid with the config file, if any."""
    cfg = copy.deepcopy(DEFAULTS)
    path = find_config(explicit)
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        _merge(cfg, data, "", path)
        cfg["_source"] = os.path.abspath(path)
    return cfg


def store_config(cfg: dict) -> StoreConfig:
    io = cfg["io"]
    return StoreConfig(backend=io["backend"], durability=io["durability"],
                       segment_max_bytes=int(io["segment_max_bytes"]),
                       index_interval_bytes=int(io["index_interval_bytes"]),
                       sync_interval_ms=int(io["sync_interval_ms"]),
                       buffer_count=int(io["buffer_count"]), buffer_size=int(io["buffer_size"]))


def to_toml(cfg: dict) -> str:
    """Render settings as TOML (for --print-config); small enough to do by hand."""
    lines: list[str] = []

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def table(name: str, d: dict) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if scalars or not d:
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
            lines.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for section, body in cfg.items():
        if not section.startswith("_"):
            table(section, body)
    return "\n".join(lines)
