"""What the three CLIs share: error handling, JSON output, tables, progress bars.

Commands report through these so that every CLI fails the same way (a message
naming the thing, exit 1 or 2) and `--json` output is always one JSON document.
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from typing import Callable, Iterator

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from .errors import LanceError
from .settings import ConfigError

# Soft wrap: a finding or an error stays one line (paths intact) in pipes and logs,
# where the console would otherwise wrap at 80 columns.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def handle_errors(fn: Callable) -> Callable:
    """Turn expected failures into one line on stderr and exit code 1 (2 for usage).

    The message is escaped: "[dr.targets]" or "[io]" in it is text, not console markup.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(2)
        except (LanceError, OSError, ValueError) as exc:
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(1)

    return wrapper


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, default=str, indent=None))


def table(title: str, columns: list[str], rows: list[list]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console.print(t)


@contextlib.contextmanager
def progress_bar(total: int, label: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A byte-counting progress bar on a terminal; a no-op elsewhere (CI, pipes, --json)."""
    if not (enabled and err_console.is_terminal and total > 0):
        yield lambda n: None
        return
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_ns(ts: int | None) -> str:
    if not ts:
        return "-"
    import datetime
    return datetime.datetime.fromtimestamp(ts / 1e9, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
