"""`lance-dr restore`: download, verify and cut a generation into a new data directory.

Options and messages only; the restore itself is lance_dr.restore.
"""
from __future__ import annotations

import os

import click

from lance_store import LanceError, clikit
from lance_store.clikit import emit_json, handle_errors

from ..errors import RestoreError
from ..restore import restore, staging_dir
from .common import EPILOG, bar, config_option, json_option, restore_point, target_spec


def restore_options(fn):
    for option in reversed([
        click.option("--from", "source", required=True, metavar="NAME|URL", help="Target to restore from."),
        click.option("--to", "dest", required=True, type=click.Path(file_okay=False),
                     help="New data directory (absent or empty)."),
        click.option("--generation", type=click.IntRange(1), default=None,
                     help="[default: the one LATEST names]"),
        click.option("--at", default=None, metavar="TIME",
                     help="Keep batches up to this time (ISO 8601, Unix s or ns)."),
        click.option("--offset", "offsets", multiple=True, metavar="N|TOPIC=N",
                     help="Keep batches ending at or before byte offset N (every topic, or one)."),
        click.option("--node-id", type=click.IntRange(0, 0xFFFF), default=None,
                     help="node_id of the new node  [default: the shipped one]"),
        click.option("--force", is_flag=True, help="Replace a non-empty --to."),
    ]):
        fn = option(fn)
    return fn


@click.command("restore", epilog=EPILOG)
@restore_options
@config_option
@json_option
@handle_errors
def restore_command(source, dest, generation, at, offsets, node_id, force, config_path, as_json):
    """Restore a generation into a new data directory.

    Downloads into a hidden sibling of --to (a retry resumes there), verifies
    every byte, cuts each topic at the requested point (whole batches only),
    rebuilds indexes and writes node.json; only then moves it into --to. A
    failed restore leaves --to as it found it.
    """
    point = restore_point(at, offsets)
    with target_spec(source, config_path).open() as target:
        result = run_restore(lambda: restore(target, dest, generation=generation, point=point,
                                             node_id=node_id, force=force,
                                             progress=bar("restoring", as_json)), dest)
    if as_json:
        emit_json(result.as_dict())
        return
    clikit.table(f"restored generation {result.generation} from {result.url} into {result.path}",
                 ["topic", "low", "high", "shipped high"],
                 [[n, t["low"], t["high"], t["shipped_high"]] for n, t in result.topics.items()])
    clikit.console.print(f"node_id {result.node_id}; {result.verified_bytes} bytes verified in "
                         f"{result.seconds:.2f} s", highlight=False)


def run_restore(work, dest: str):
    """Run a restore; a failure says that --to is untouched and where the downloads wait."""
    try:
        return work()
    except LanceError as exc:
        stage = staging_dir(dest)
        if not os.path.isdir(stage):
            raise
        raise RestoreError(f"{exc}; {dest} is as it was, downloads are kept in {stage} (a retry resumes "
                           "from them; delete it to start over)") from exc
