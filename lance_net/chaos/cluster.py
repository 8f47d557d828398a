"""A local L3 cluster that a chaos run starts (a real etcd and N brokers on loopback) and whose
leader it SIGKILLs and starts again.

Owns those processes and their scratch directory. It offers what a run needs of a spawned
node (endpoint, process, kills, kill(), start(), close()), so `ChaosRun` drives one broker
or a cluster alike; the endpoint is every node, comma-separated, for the clients' failover.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from lance_net.replication.testing import ClusterNode, EtcdServer, LocalCluster

from .node import START_TIMEOUT_S, NodeFailed

# Short leases make failover quick; the leader still acknowledges only inside its lease.
CLUSTER_CONFIG = "[replication]\nlease_ttl_s = 3\n"


class SpawnedCluster:
    def __init__(self, size: int = 3):
        if size < 3:
            raise ValueError(f"nodes: a cluster that survives a kill needs at least 3, found {size}")
        self.size = size
        self._scratch = Path(tempfile.mkdtemp(prefix="lance-chaos-l3-"))
        self.etcd = EtcdServer()
        self.cluster: LocalCluster | None = None
        self.kills = 0
        self._target: ClusterNode | None = None   # the node killed last (until it is back)
        self._restarted: ClusterNode | None = None

    @property
    def endpoint(self) -> str:
        return ",".join(node.endpoint for node in self.cluster.nodes.values())

    @property
    def process(self):
        """The process a kill hits next: the leader's."""
        return self._leader().process

    @property
    def restarted_pid(self) -> int:
        """The process id of the node started again last."""
        return self._restarted.process.pid

    def _leader(self) -> ClusterNode:
        return self.cluster.leader(timeout=START_TIMEOUT_S)

    async def start(self) -> None:
        """The first call starts etcd and every node; later calls restart the killed node and
        return once it follows again."""
        loop = asyncio.get_running_loop()
        if self.cluster is None:
            try:
                await loop.run_in_executor(None, self.etcd.start)
            except (OSError, RuntimeError) as exc:
                raise NodeFailed(f"etcd did not start ({exc}); L3 needs etcd "
                                 "(Debian package etcd-server)") from None
            self.cluster = LocalCluster(self._scratch, self.etcd.url, size=self.size,
                                        cluster="chaos", config_toml=CLUSTER_CONFIG)
            await loop.run_in_executor(None, self._wait_started, self.cluster.start)
            return
        node = self._target
        node.start()
        await loop.run_in_executor(None, self._wait_started, self.cluster.wait_ready)
        self._restarted, self._target = node, None

    @staticmethod
    def _wait_started(wait) -> None:
        try:
            wait(START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as exc:
            raise NodeFailed(str(exc)) from None

    def kill(self) -> None:
        """SIGKILL the current leader."""
        self._target = self._leader()
        self._target.kill()
        self.kills += 1

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        self.etcd.stop()
        shutil.rmtree(self._scratch, ignore_errors=True)
