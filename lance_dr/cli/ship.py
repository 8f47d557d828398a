"""`lance-dr ship`: one incremental ship, or --watch to keep shipping and report the lag.

Options and messages only; shipping is lance_dr.ship, the loop lance_dr.watch.
"""
from __future__ import annotations

import sys

import click
from rich.markup import escape

from lance_store import clikit
from lance_store.clikit import emit_json, handle_errors, human_bytes

from ..ship import DEFAULT_KEEP, ship
from ..throttle import parse_rate
from ..watch import Round, watch
from .common import EPILOG, bar, config_option, json_option, load_settings, target_spec


@click.command("ship", epilog=EPILOG)
@click.option("--to", "to", required=True, metavar="NAME|URL", help="Target: a [dr.targets] name or a URL.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data directory to ship  [default: [node] data_dir]")
@click.option("--watch", "watching", is_flag=True, help="Keep shipping as batches land; report the lag.")
@click.option("--interval", type=click.FloatRange(0.05), default=1.0, show_default=True,
              help="Seconds between rounds with --watch.")
@click.option("--rounds", type=click.IntRange(1), default=None, help="With --watch: stop after N rounds.")
@click.option("--bwlimit", default=None, metavar="RATE", help="Bytes per second, e.g. 50M or 800K.")
@click.option("--keep", type=click.IntRange(1), default=None,
              help=f"Generations to keep on the target  [default: target's keep, else {DEFAULT_KEEP}]")
@config_option
@json_option
@handle_errors
def ship_command(to, data_dir, watching, interval, rounds, bwlimit, keep, config_path, as_json):
    """Ship the data directory's new bytes to a target, as a new generation.

    Reads the data directory read-only: safe next to a running broker. Sealed
    segments the target holds are skipped; the active segment ships up to its
    last complete batch; an interrupted ship resumes. The manifest and then
    LATEST are written only once every file they name is in place.
    """
    cfg = load_settings(config_path)
    spec = target_spec(to, config_path)
    data_dir = data_dir or cfg["node"]["data_dir"]
    limit = parse_rate(bwlimit) if bwlimit is not None else spec.bwlimit
    keep = keep or spec.keep or DEFAULT_KEEP
    with spec.open() as target:
        if watching:
            try:
                failures = watch(data_dir, target, interval=interval, rounds=rounds, keep=keep,
                                 bwlimit=limit, on_round=_json_round if as_json else _print_round)
            except KeyboardInterrupt:
                sys.exit(0)    # Ctrl-C between or during rounds: whatever was published stands
            sys.exit(1 if rounds is not None and failures == rounds else 0)
        result = ship(data_dir, target, keep=keep, bwlimit=limit, progress=bar("shipping", as_json))
    if as_json:
        emit_json(result.as_dict())
        return
    if result.generation is None:
        clikit.console.print(f"{target.url}: up to date (generation {result.latest}); nothing sent "
                             f"({result.seconds:.2f} s)", highlight=False)
        return
    clikit.console.print(
        f"{target.url}: generation {result.generation} published: {result.uploaded_files} files, "
        f"{human_bytes(result.uploaded_bytes)} sent, {result.skipped_files} already there, "
        f"{result.pruned_files} pruned, in {result.seconds:.2f} s", highlight=False)
    for obj in result.forked:
        clikit.console.print(f"[yellow]note:[/] {obj}: the source rewrote a tail it had shipped (a crash "
                             "lost unsynced batches); shipped under a name of its own", highlight=False)


def _json_round(r: Round) -> None:
    emit_json(r.as_dict())


def _print_round(r: Round) -> None:
    if r.error:
        clikit.err_console.print(f"[red]round {r.number} failed:[/] {escape(r.error)} (retrying)", highlight=False)
        return
    what = "up to date" if r.result.generation is None else \
        f"generation {r.result.generation}, {human_bytes(r.result.uploaded_bytes)} sent"
    clikit.console.print(f"round {r.number}: {what}; behind by {human_bytes(r.lag.bytes)} / "
                         f"{r.lag.seconds:.1f} s", highlight=False)
