"""`lance-dr verify`: check a shipped copy byte by byte and say how far each topic restores.

Presentation only: the checks are lance_dr.verify.
"""
from __future__ import annotations

import sys

import click
from rich.markup import escape

from lance_store import clikit
from lance_store.clikit import emit_json, handle_errors, human_bytes, human_ns

from ..config import TargetSpec
from ..state import VerifyState
from ..verify import verify_target
from .common import EPILOG, bar, config_option, json_option, target_spec


@click.command("verify", epilog=EPILOG)
@click.argument("path", required=False, type=click.Path(file_okay=False))
@click.option("--target", "target_name", metavar="NAME|URL", default=None,
              help="Target to verify (instead of PATH, a shipped copy in a local folder).")
@click.option("--generation", type=click.IntRange(1), default=None, help="[default: the one LATEST names]")
@click.option("--since-last", is_flag=True,
              help="Re-check only objects that changed since the last clean verify.")
@click.option("--state-file", type=click.Path(dir_okay=False), default=None,
              help="Where --since-last keeps what it verified  [default: ~/.local/state/lance-dr/verify.json]")
@config_option
@json_option
@handle_errors
def verify_command(path, target_name, generation, since_last, state_file, config_path, as_json):
    """Verify a shipped copy: the manifest's checksum, every file's size and BLAKE3
    digest, every batch's CRCs and offsets, and gaps between segments.

    Ends with a verdict per topic: "restorable to offset X / time T".
    """
    if (path is None) == (target_name is None):
        raise click.UsageError("give either PATH or --target")
    spec = TargetSpec(path) if path else target_spec(target_name, config_path)
    state = VerifyState(state_file) if (since_last or state_file) else None
    with spec.open() as target:
        report = verify_target(target, generation=generation, since_last=since_last, state=state,
                               progress=bar("verifying", as_json))
    if as_json:
        emit_json(report.as_dict())
    else:
        rows = [[t.name, t.low, t.high, t.restorable_offset, human_ns(t.restorable_ts),
                 "yes" if t.complete else "[red]no[/]"] for t in report.topics]
        clikit.table(f"verify {report.url} generation {report.generation}",
                     ["topic", "low", "shipped high", "restorable to offset", "restorable to time", "whole"],
                     rows)
        for f in report.findings:
            color = {"damage": "red", "warning": "yellow"}.get(f.severity, "cyan")
            clikit.console.print(f"[{color}]{escape(str(f))}[/]", highlight=False, soft_wrap=True)
        rate = report.bytes_checked / report.seconds / 1e6 if report.seconds > 0 else 0
        verdict = "[red]DAMAGED[/]" if report.damaged else "[green]clean[/]"
        skipped = f", {report.files_skipped} unchanged since the last clean verify" if report.files_skipped else ""
        clikit.console.print(f"{verdict}: {report.files_checked} files, {human_bytes(report.bytes_checked)} "
                             f"checked in {report.seconds:.2f} s ({rate:.0f} MB/s){skipped}", highlight=False)
    sys.exit(1 if report.damaged else 0)
