"""`lance-dr warm-start`: restore, start `lance-net serve` on the result, wait until it is ready.

Options, messages and signal forwarding; the work is lance_dr.warmstart.
"""
from __future__ import annotations

import signal
import sys

import click

from lance_store import clikit
from lance_store.clikit import emit_json, handle_errors

from ..warmstart import warm_start
from .common import EPILOG, bar, config_option, json_option, load_settings, restore_point, target_spec
from .restore import restore_options, run_restore


@click.command("warm-start", epilog=EPILOG)
@restore_options
@click.option("--listen", default=None, metavar="HOST:PORT", help="LWP address  [default: [network] listen]")
@click.option("--http", "http", default=None, metavar="HOST:PORT",
              help="Health address polled for readiness  [default: [network] http]")
@click.option("--ready-timeout", type=click.FloatRange(1), default=120.0, show_default=True,
              help="Seconds to wait for /health/ready.")
@click.option("--detach", is_flag=True, help="Return once ready, leaving the broker running.")
@config_option
@json_option
@handle_errors
def warm_start_command(source, dest, generation, at, offsets, node_id, force, listen, http, ready_timeout,
                       detach, config_path, as_json):
    """Restore a generation, then serve it with `lance-net serve`.

    Waits until GET http://HTTP/health/ready answers 200. Without --detach it
    then stays in the foreground until the broker exits (SIGINT and SIGTERM are
    passed on, so the broker drains).
    """
    cfg = load_settings(config_path)
    listen = listen or cfg["network"]["listen"]
    http = http or cfg["network"]["http"]
    point = restore_point(at, offsets)
    with target_spec(source, config_path).open() as target:
        started = run_restore(lambda: warm_start(
            target, dest, listen=listen, http=http, config=config_path, generation=generation, point=point,
            node_id=node_id, force=force, ready_timeout=ready_timeout, progress=bar("restoring", as_json)),
            dest)
    if as_json:
        emit_json(started.as_dict())
    else:
        clikit.console.print(f"restored generation {started.restore.generation} into {started.restore.path}; "
                             f"lance-net serve (pid {started.process.pid}) ready on {listen} after "
                             f"{started.ready_seconds:.1f} s", highlight=False)
    if detach:
        return
    proc = started.process
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    sys.exit(proc.wait())
