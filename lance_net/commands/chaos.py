"""`lance-net chaos`: produce sequence-numbered records, consume them back, and count what went
missing or came twice, optionally while SIGKILLing a broker (or an L3 cluster's leader) that this
command started.

Owns the command line and the summary; the run is lance_net.chaos's.
"""
from __future__ import annotations

import sys

import click

from lance_store.clikit import console, emit_json, err_console, handle_errors, table

from lance_net.chaos import ChaosReport, ChaosRun, ChaosSettings, SpawnedCluster, SpawnedNode
from lance_net.client.cliopts import client_options, run_command


async def chaos(endpoint, options, settings: ChaosSettings, *, spawn: bool, data_dir,
                echo, nodes: int = 1) -> ChaosReport:
    if not spawn:
        return await ChaosRun(endpoint, options, settings, echo=echo).run()
    node = SpawnedNode(data_dir) if nodes == 1 else SpawnedCluster(nodes)
    try:
        await node.start()
        if nodes == 1:
            echo(f"chaos: spawned broker {node.process.pid} on {node.endpoint}, "
                 f"data {node.data_dir}")
        else:
            echo(f"chaos: spawned an L3 cluster of {nodes} nodes on {node.endpoint} "
                 f"(etcd {node.etcd.url}), leader {node.process.pid}")
        return await ChaosRun(node.endpoint, options, settings, node, echo=echo).run()
    finally:
        node.close()


def summary(report: ChaosReport) -> None:
    d = report.as_dict()
    rows = [[k, d[k]] for k in (
        "endpoint", "topic", "start_offset", "elapsed_s", "sent", "produced", "failed",
        "consumed", "gaps", "duplicates", "out_of_order", "unacked_consumed", "drained",
        "caught_up", "producer_reconnects", "batches_resent", "consumer_retries")]
    if report.settings.kill_every_s:
        rows += [["kills", d["kills"]], ["kill_to_ack_median_s", d["kill_to_ack_median_s"]]]
    if d["first_gaps"]:
        rows.append(["first_gaps", d["first_gaps"]])
    if d["producer_error"]:
        rows.append(["producer_error", d["producer_error"]])
    table(f"chaos run {d['run_id']}", ["field", "value"], rows)
    if report.verdict.ok:
        console.print(f"[green]ok[/]: every one of {d['produced']} acknowledged record(s) "
                      f"consumed exactly once")
    else:
        console.print(f"[red]FAILED[/]: {d['gaps']} acknowledged record(s) never consumed, "
                      f"{d['duplicates']} duplicate(s)")


@click.command("chaos")
@click.option("--topic", default="chaos", show_default=True,
              help="Topic to produce to and consume from (created when missing).")
@click.option("--rate", type=click.FloatRange(1), default=1000.0, show_default=True,
              help="Records per second to produce.")
@click.option("--duration", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds of producing.")
@click.option("--msg-size", type=click.IntRange(16, 1024 * 1024), default=64, show_default=True,
              help="Bytes per record: run id and sequence number (16), then padding.")
@click.option("--spawn", is_flag=True,
              help="Start a local broker (free port; scratch data directory unless --data-dir) "
                   "and run against it instead of --endpoint.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data directory of the --spawn broker (kept afterwards).")
@click.option("--nodes", type=click.IntRange(1), default=1, show_default=True,
              help="With --spawn: start an L3 cluster of this many nodes (3 or more) on a "
                   "local etcd instead of one broker; --kill-leader-every then kills its leader.")
@click.option("--kill-leader-every", "kill_every", type=click.FloatRange(0.1), default=None,
              metavar="SECONDS", help="With --spawn: SIGKILL the broker this often and start it "
                                      "again on the same port and data directory.")
@click.option("--drain-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds to wait at the end for acks, then for the consumer to catch up.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line last.")
@client_options
@handle_errors
def command(topic, rate, duration, msg_size, spawn, data_dir, nodes, kill_every, drain_timeout,
            as_json, endpoint, options):
    """Produce sequence-numbered records at --rate for --duration seconds through the
    idempotent producer while consuming them from the start offset, then report records
    acknowledged but never consumed (gaps), consumed twice (duplicates) and out of order.

    Exits 1 on any gap or duplicate, 0 otherwise.
    """
    if kill_every is not None and not spawn:
        raise click.UsageError("--kill-leader-every kills only a broker this command started: "
                               "add --spawn")
    if data_dir is not None and not spawn:
        raise click.UsageError("--data-dir is the data directory of a --spawn broker: add --spawn")
    if nodes > 1 and not spawn:
        raise click.UsageError("--nodes starts a local cluster: add --spawn")
    if nodes == 2:
        raise click.UsageError("--nodes 2: a two-node cluster stops at the first kill; use 3 or more")
    if nodes > 1 and data_dir is not None:
        raise click.UsageError("--data-dir is for one spawned broker; a cluster's nodes live in "
                               "a scratch directory")
    settings = ChaosSettings(topic=topic, rate=rate, duration_s=duration, msg_size=msg_size,
                             kill_every_s=kill_every, drain_timeout_s=drain_timeout)
    report = run_command(chaos(endpoint, options, settings, spawn=spawn, data_dir=data_dir,
                               nodes=nodes, echo=lambda line: err_console.print(line, highlight=False,
                                                                   markup=False)))
    summary(report)
    if as_json:
        emit_json(report.as_dict())
    sys.exit(0 if report.verdict.ok else 1)
