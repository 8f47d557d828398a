"""What every lance-dr command shares: --config and --json, target resolution, progress bars,
and parsing of times and offsets typed by an operator.
"""
from __future__ import annotations

import datetime
import functools
import re

import click

from lance_store import clikit, settings

from ..config import TargetSpec, resolve
from ..restore import RestorePoint

EPILOG = "Exit codes: 0 success, 1 damage found or the command failed, 2 usage or config error."


def config_option(fn):
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="lance.toml  [default: $LANCE_CONFIG, else ./lance.toml if present]")(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(fn)


def load_settings(config_path: str | None) -> dict:
    return settings.load(config_path)


def target_spec(spec: str, config_path: str | None) -> TargetSpec:
    return resolve(spec, load_settings(config_path))


def bar(label: str, as_json: bool):
    return functools.partial(clikit.progress_bar, label=label, enabled=not as_json)


_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from ISO 8601 (UTC unless it says otherwise), or a number:
    seconds when it has 10 or fewer integer digits, nanoseconds otherwise."""
    text = text.strip()
    if _NUMBER.match(text):
        whole = text.split(".")[0]
        return int(text) if len(whole) > 12 and "." not in text else int(float(text) * 1e9)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected ISO 8601 (2024-05-01T12:00:00Z), Unix seconds "
                                 "or Unix nanoseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    delta = when - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def restore_point(at: str | None, offsets: tuple[str, ...]) -> RestorePoint:
    if at and offsets:
        raise click.UsageError("give --at or --offset, not both")
    if at:
        return RestorePoint(at_ns=parse_time(at))
    every, per_topic = None, {}
    for item in offsets:
        name, sep, value = item.rpartition("=")
        if not value.isdigit() or (sep and not name):
            raise click.BadParameter(f"{item!r}: expected N or TOPIC=N (a byte offset)", param_hint="--offset")
        if sep:
            per_topic[name] = int(value)
        elif every is not None:
            raise click.BadParameter("a bare --offset N may be given once", param_hint="--offset")
        else:
            every = int(value)
    return RestorePoint(offset=every, topic_offsets=per_topic)
