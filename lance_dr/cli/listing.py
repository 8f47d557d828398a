"""`lance-dr list`: the generations on a target, with time, topics, bytes and the newest point.

Read-only: it loads manifests through lance_dr.generations and writes nothing.
"""
from __future__ import annotations

import click
from rich.markup import escape

from lance_store import clikit
from lance_store.clikit import emit_json, handle_errors, human_bytes, human_ns

from ..generations import list_generations
from .common import EPILOG, config_option, json_option, target_spec


@click.command("list", epilog=EPILOG)
@click.option("--target", "target_name", required=True, metavar="NAME|URL")
@config_option
@json_option
@handle_errors
def list_command(target_name, config_path, as_json):
    """List the generations on a target, oldest first.

    A generation above the one LATEST names is from a ship that did not finish;
    restore never uses it.
    """
    with target_spec(target_name, config_path).open() as target:
        gens = list_generations(target)
    docs = []
    for g in gens:
        m = g.manifest
        status = "latest" if g.latest else ("published" if g.published else "unfinished")
        if g.problem and g.published:
            status = "damaged"
        docs.append({
            "generation": g.number, "status": status, "problem": g.problem,
            "created_at_ns": m.created_at_ns if m else None,
            "snapshot_at_ns": m.snapshot_at_ns if m else None,
            "topics": {t.name: {"low": t.low, "high": t.high, "last_ts": t.last_ts, "bytes": t.bytes}
                       for t in m.topics} if m else {},
            "bytes": m.bytes if m else None,
            "newest_ts": m.newest_ts if m else None,
        })
    if as_json:
        emit_json({"url": target.url, "generations": docs})
        return
    rows = [[d["generation"], d["status"], human_ns(d["created_at_ns"]), len(d["topics"]),
             human_bytes(d["bytes"]) if d["bytes"] is not None else "-", human_ns(d["newest_ts"]),
             ", ".join(f"{n}@{t['high']}" for n, t in d["topics"].items())] for d in docs]
    clikit.table(f"generations on {target.url}", ["generation", "status", "created", "topics", "bytes",
                                                   "newest record", "restorable to (topic@offset)"], rows)
    for d in docs:
        if d["problem"]:
            clikit.console.print(f"[red]damage:[/] {escape(d['problem'])}", highlight=False, soft_wrap=True)
    if not docs:
        clikit.console.print(f"{target.url}: no generations", highlight=False)
