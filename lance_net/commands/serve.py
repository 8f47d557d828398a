"""`lance-net serve`: run a broker on a data directory until SIGTERM or SIGINT.

Owns the command line of the broker; the broker itself is lance_net.server.
"""
from __future__ import annotations

import copy
import logging
import sys

import click

from lance_store import settings
from lance_store.clikit import handle_errors

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.command("serve")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data directory, created when missing  [default: [node] data_dir, ./lance-data]")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="LWP listen address  [default: [network] listen, 127.0.0.1:1992]")
@click.option("--http", "http", metavar="HOST:PORT|off", default=None,
              help="Health and /metrics address, or off  [default: [network] http, 127.0.0.1:8080]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="lance.toml  [default: $LANCE_CONFIG, else ./lance.toml if present]")
@click.option("--node-id", type=click.IntRange(0, 0xFFFF), default=None,
              help="This node's id  [default: [node] id, 1]")
@click.option("--replication-mode", type=click.Choice(("l1", "l3")), default=None,
              help="l1: standalone; l3: one member of a cluster  [default: [replication] mode, l1]")
@click.option("--etcd", "etcd", metavar="URL", multiple=True,
              help="etcd endpoint (repeatable)  [default: [replication] etcd]")
@click.option("--cluster", metavar="NAME", default=None,
              help="Cluster name: the etcd key prefix  [default: [replication] cluster, lance]")
@click.option("--advertise", metavar="HOST:PORT", default=None,
              help="The LWP address other nodes and redirected clients use  "
                   "[default: [replication] advertise]")
@click.option("--members", metavar="ID,ID,...", default=None,
              help="Every node id of the cluster, this one included  [default: [replication] members]")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option("--print-config", is_flag=True,
              help="Print the default configuration as TOML and exit.")
@handle_errors
def command(data_dir, listen, http, config_path, node_id, replication_mode, etcd, cluster,
            advertise, members, log_level, print_config):
    """Serve LWP clients from a data directory, with durable acks.

    The node is ready (GET /health/ready) once recovery has finished. SIGTERM or
    SIGINT drains: no new connections, every batch already received is written
    and acknowledged, then the process exits 0 (within [network] drain_timeout_s).
    A second signal stops at once.

    With --replication-mode l3 the node joins the cluster named by --cluster through
    etcd: one leader takes writes and acknowledges a batch once a majority of
    --members holds it; followers redirect writes to the leader.
    """
    if print_config:
        click.echo(settings.to_toml(copy.deepcopy(settings.DEFAULTS)), nl=False)
        return
    from lance_net.server import ServerOptions, run

    cfg = settings.load(config_path)
    rep = cfg["replication"]
    for key, value in (("mode", replication_mode), ("cluster", cluster), ("advertise", advertise)):
        if value is not None:
            rep[key] = value
    if etcd:
        rep["etcd"] = list(etcd)
    if members is not None:
        try:
            rep["members"] = [int(m) for m in members.split(",") if m.strip()]
        except ValueError:
            raise click.BadParameter(f"expected node ids separated by commas, found {members!r}",
                                     param_hint="--members") from None
    options = ServerOptions.from_settings(cfg, data_dir=data_dir, listen=listen, http=http,
                                          node_id=node_id)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.get("_source"):
        logging.getLogger("lance_net.server").info("config: %s", cfg["_source"])
    sys.exit(run(options))
