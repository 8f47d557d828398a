"""`lance-dr drill`: restore into a scratch folder, verify, read everything, report RTO and RPO.

Presentation only: the drill itself is lance_dr.drill.
"""
from __future__ import annotations

import sys

import click
from rich.markup import escape

from lance_store import clikit
from lance_store.clikit import emit_json, handle_errors, human_bytes

from ..drill import drill
from .common import EPILOG, bar, config_option, json_option, target_spec


@click.command("drill", epilog=EPILOG)
@click.option("--from", "source", required=True, metavar="NAME|URL")
@click.option("--generation", type=click.IntRange(1), default=None, help="[default: the one LATEST names]")
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="The live data directory, to measure how far the copy lags it.")
@click.option("--workdir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Where the scratch restore goes  [default: the system temp folder]")
@config_option
@json_option
@handle_errors
def drill_command(source, generation, data_dir, workdir, config_path, as_json):
    """Rehearse a recovery: restore into a scratch folder, verify it, open it with
    lance_store and read every topic end to end, then delete it.

    Reports RTO (time until a verified, openable directory) and RPO (how old
    the shipped copy is, or how far it is behind --data-dir).
    """
    with target_spec(source, config_path).open() as target:
        report = drill(target, generation=generation, data_dir=data_dir, workdir=workdir,
                       progress=bar("restoring", as_json))
    if as_json:
        emit_json(report.as_dict())
    else:
        clikit.table(f"drill of {report.url} generation {report.generation}",
                     ["topic", "records", "low", "high"],
                     [[n, t["records"], t["low"], t["high"]] for n, t in report.topics.items()])
        lag = f", {human_bytes(report.lag_bytes)} behind the source" if report.lag_bytes is not None else ""
        clikit.console.print(f"RTO {report.rto_seconds:.2f} s (restore {report.restore_seconds:.2f} s), "
                             f"RPO {report.rpo_seconds:.1f} s{lag}; {report.records} records, "
                             f"{human_bytes(report.bytes)} read", highlight=False)
        for p in report.problems:
            clikit.console.print(f"[red]damage:[/] {escape(p)}", highlight=False, soft_wrap=True)
        clikit.console.print("[green]drill passed[/]" if report.ok else "[red]drill FAILED[/]")
    sys.exit(0 if report.ok else 1)
