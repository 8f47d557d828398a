"""`lance-net status`: the cluster status a broker reports, and its topics.

Owns the command line of that report; the requests are lance_net.client.Admin's.
"""
from __future__ import annotations

import click

from lance_store.clikit import emit_json, handle_errors, table

from lance_net.client import Admin
from lance_net.client.cliopts import client_options, run_command


async def status(endpoint, options) -> dict:
    async with Admin(endpoint, options) as admin:
        report = dict(await admin.cluster_status())
        report["topics"] = len(await admin.list_topics())
        report["endpoint"] = admin.session.endpoint
        return report


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON document.")
@client_options
@handle_errors
def command(as_json, endpoint, options):
    """Show the node's cluster status: mode, leader, epoch, peers, topics."""
    report = run_command(status(endpoint, options))
    if as_json:
        emit_json(report)
        return
    peers = report.get("peer_states") or {}
    rows = [[k, report.get(k)] for k in (
        "endpoint", "node_id", "mode", "is_leader", "leader_id", "leader_addr", "epoch",
        "current_term", "node_count", "healthy_nodes", "quorum_available", "topics")]
    rows += [[f"peer {peer}", state] for peer, state in sorted(peers.items())]
    table("cluster status", ["field", "value"], rows)
