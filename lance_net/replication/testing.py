"""A real etcd on loopback and a local L3 cluster of `lance-net serve` processes, for tests,
benchmarks and trying a cluster on one machine.

Owns the child processes it starts (ports, data directories, logs, signals); what the
processes do is the broker's.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from lance_net.client.options import parse_endpoint
from lance_net.protocol import (NEED_DATA, Ack, Connection, ConnectionClosed, Dialect,
                                ErrorResponse, Ingest, InitProducer, ProducerResponse, Role)
from lance_store.records import encode
from lance_store.testing.ports import free_port

ETCD_BINARY = os.environ.get("LANCE_ETCD", "etcd")


def lance_net_command() -> list[str]:
    """The installed `lance-net` script beside this interpreter, else `python -m lance_net.cli`."""
    script = Path(sys.executable).with_name("lance-net")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lance_net.cli"]


class EtcdServer:
    """`with EtcdServer() as etcd: etcd.url ...` starts etcd and stops it on exit.

    `pause()`/`resume()` freeze the process (SIGSTOP/SIGCONT), which is how a test makes
    keepalives go unanswered; `kill()` ends it for good.
    """

    def __init__(self, *, binary: str = ETCD_BINARY, startup_timeout: float = 20.0):
        self.binary = shutil.which(binary) or binary
        self.startup_timeout = startup_timeout
        self.client_port = 0
        self.peer_port = 0
        self.data_dir = ""
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> "EtcdServer":
        self.data_dir = tempfile.mkdtemp(prefix="lance-etcd-")
        last_error = ""
        for _ in range(3):  # a port picked free can be taken before etcd binds it
            self.client_port, self.peer_port = free_port(), free_port()
            peer = f"http://127.0.0.1:{self.peer_port}"
            self._log = open(os.path.join(self.data_dir, "etcd.log"), "wb")
            self.process = subprocess.Popen(
                [self.binary, "--name", "lance-test", "--data-dir", os.path.join(self.data_dir, "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"lance-test={peer}", "--log-level", "error"],
                stdout=self._log, stderr=subprocess.STDOUT)
            if self._wait_healthy():
                return self
            last_error = self._tail_log()
            self._terminate()
        raise RuntimeError(f"etcd at {self.url} did not become healthy within "
                           f"{self.startup_timeout} s; its log ends: {last_error}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.05)
        return False

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as reply:
                return b'"true"' in reply.read()
        except OSError:
            return False

    def _tail_log(self) -> str:
        try:
            with open(os.path.join(self.data_dir, "etcd.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        self._terminate()

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._terminate()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- a local L3 cluster ---------------------------------------------------------------------------

class ClusterNode:
    """One `lance-net serve --replication-mode l3` process on fixed loopback ports."""

    def __init__(self, root: Path, node_id: int, members: list[int], etcd_url: str, cluster: str,
                 config_toml: str = ""):
        self.root = Path(root) / f"node{node_id}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.node_id = node_id
        self.members = members
        self.etcd_url = etcd_url
        self.cluster = cluster
        self.port = free_port()
        self.http_port = free_port()
        self.data_dir = self.root / "data"
        self.log_path = self.root / "broker.log"
        self.config_path = self.root / "lance.toml"
        self.config_path.write_text(config_toml)
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*lance_net_command(), "serve", "--data-dir", str(self.data_dir), "--listen", self.endpoint,
                "--http", f"127.0.0.1:{self.http_port}", "--config", str(self.config_path),
                "--node-id", str(self.node_id), "--replication-mode", "l3",
                "--etcd", self.etcd_url, "--cluster", self.cluster, "--advertise", self.endpoint,
                "--members", ",".join(map(str, self.members))]

    def start(self) -> "ClusterNode":
        """Start the process; it listens at once, and is ready once it leads or follows."""
        env = {k: v for k, v in os.environ.items() if k != "LANCE_CONFIG"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.root, env=env)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.running:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if not self.running:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"node {self.node_id} did not stop within {timeout} s")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def http_json(self, path: str, timeout: float = 2.0) -> tuple[int | None, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=timeout) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return None, {}

    def health(self) -> dict:
        """/health/ready's document with `ready` (whether it answered 200) added."""
        status, body = self.http_json("/health/ready")
        return {**body, "ready": status == 200}


class LocalCluster:
    """`size` nodes with ids 1..size on one etcd; every node ready means a leader leads
    and every other node follows it."""

    def __init__(self, root: Path, etcd_url: str, *, size: int = 3, cluster: str = "lance",
                 config_toml: str = ""):
        members = list(range(1, size + 1))
        self.nodes = {n: ClusterNode(root, n, members, etcd_url, cluster, config_toml)
                      for n in members}

    def start(self, timeout: float = 60) -> "LocalCluster":
        for node in self.nodes.values():
            node.start()
        # Every node, named: one that died at start must fail here with its log, not leave
        # a smaller cluster that looks ready.
        try:
            self.wait_ready(timeout, nodes=list(self.nodes))
        except BaseException:
            self.close()     # `with` never reaches __exit__ when __enter__ raises
            raise
        return self

    def wait_ready(self, timeout: float = 60, nodes=None) -> int:
        """Wait until the given (default: all running) nodes are ready; returns the leader's id."""
        deadline = time.monotonic() + timeout
        while True:
            wanted = [self.nodes[n] for n in nodes] if nodes else \
                [n for n in self.nodes.values() if n.running]
            health = {n.node_id: n.health() for n in wanted}
            leaders = {h.get("leader_id") for h in health.values()}
            if all(h["ready"] for h in health.values()) and len(leaders) == 1:
                leader = leaders.pop()
                if leader in self.nodes and self.nodes[leader].health().get("is_leader"):
                    return leader
            for node in wanted:
                if node.process.poll() is not None:
                    raise RuntimeError(f"node {node.node_id} exited with "
                                       f"{node.process.returncode}:\n{node.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready within {timeout} s: {health}")
            time.sleep(0.05)

    def leader(self, timeout: float = 60, exclude: tuple[int, ...] = ()) -> ClusterNode:
        """The node that is leading and writable, waiting for one (not among `exclude`)."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes.values():
                if node.running and node.node_id not in exclude:
                    health = node.health()
                    if health["ready"] and health.get("is_leader"):
                        return node
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader within {timeout} s")
            time.sleep(0.02)

    def followers(self, leader: ClusterNode) -> list[ClusterNode]:
        return [n for n in self.nodes.values() if n is not leader]

    def close(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# -- a producer that outlives its leader ----------------------------------------------------------

class BlockingLink:
    """A blocking LWP client connection (one thread uses it): the local tools' and the
    tests' way to speak the protocol without an event loop."""

    def __init__(self, endpoint: str, timeout: float = 10, *, dialect: Dialect = Dialect.CRC32C,
                 ssl_context: ssl.SSLContext | None = None):
        host, port = parse_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout = timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.lwp = Connection(Role.CLIENT, dialect)
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, *events) -> None:
        self.sock.sendall(b"".join(self.lwp.send(e) for e in events))

    def recv(self, timeout: float | None = None):
        """The next event from the server; ConnectionClosed once it closed the stream."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        while True:
            event = self.lwp.next_event()
            if event is not NEED_DATA:
                return event
            if self._closed:
                return ConnectionClosed()
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                self._closed = True
            self.lwp.receive_data(data)

    def request(self, command, timeout: float | None = None):
        self.send(command)
        return self.recv(timeout)

    def close(self) -> None:
        self.sock.close()


class ClusterProducer:
    """An idempotent producer across a cluster's nodes, in a thread: batches of one record
    numbered 1, 2, ...; on a lost connection or a refusal it finds the leader (following
    redirects, else trying every node), binds its producer id again and resends every
    unacknowledged batch with its sequence number.

    `acked` lists the acknowledged sequences in order, `acks` (sequence, monotonic time,
    endpoint) for each, so a failover shows as the gap between two endpoints' acks.
    """

    def __init__(self, endpoints: list[str], topic_id: int, *, window: int = 16,
                 record_size: int = 12, deadline_s: float = 60.0):
        self.endpoints = list(endpoints)
        self.topic_id = topic_id
        self.window = window
        self.record_size = record_size
        self.deadline_s = deadline_s
        self.producer_id = 0
        self.acked: list[int] = []
        self.acks: list[tuple[int, float, str]] = []
        self.inflight: collections.deque[int] = collections.deque()
        self.next_seq = 1
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._hint: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="cluster-producer")

    def value(self, seq: int) -> bytes:
        return (b"seq-%08d" % seq).ljust(self.record_size, b".")

    @staticmethod
    def sequence_of(value: bytes) -> int:
        return int(value[4:12])

    def start(self) -> "ClusterProducer":
        self._thread.start()
        return self

    def finish(self, timeout: float = 60.0) -> None:
        """Stop taking new sequences; return once every one sent is acknowledged."""
        self.stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{len(self.inflight)} batches still unacknowledged after {timeout} s")
        if self.error is not None:
            raise self.error

    def _connect(self) -> BlockingLink:
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline:
            candidates = ([self._hint] if self._hint else []) + self.endpoints
            self._hint = None
            for endpoint in candidates:
                try:
                    link = BlockingLink(endpoint, timeout=10)
                    reply = link.request(InitProducer(self.producer_id, self.topic_id))
                except OSError:
                    continue
                if isinstance(reply, ProducerResponse):
                    self.producer_id = reply.producer_id
                    return link
                link.close()
                if isinstance(reply, ErrorResponse) and "redirect to " in reply.message:
                    self._hint = reply.message.rsplit(" ", 1)[1]
                    break
            time.sleep(0.02)
        raise TimeoutError(f"no leader took the producer within {self.deadline_s} s")

    def _send(self, link: BlockingLink, seq: int) -> None:
        payload, count = encode([self.value(seq)])
        link.send(Ingest(self.topic_id, seq, count, payload))

    def _run(self) -> None:
        try:
            link = self._connect()
            while True:
                try:
                    for seq in self.inflight:            # resent after a reconnect
                        self._send(link, seq)
                    while self.inflight or not self.stop.is_set():
                        while len(self.inflight) < self.window and not self.stop.is_set():
                            self.inflight.append(self.next_seq)
                            self._send(link, self.next_seq)
                            self.next_seq += 1
                        reply = link.recv()
                        if isinstance(reply, ConnectionClosed):
                            raise ConnectionError(f"{link.endpoint} closed the connection")
                        if isinstance(reply, Ack) and reply.batch_id == self.inflight[0]:
                            seq = self.inflight.popleft()
                            self.acked.append(seq)
                            self.acks.append((seq, time.monotonic(), link.endpoint))
                            continue
                        if isinstance(reply, ErrorResponse):
                            if "redirect to " in reply.message:
                                self._hint = reply.message.rsplit(" ", 1)[1]
                            raise ConnectionError(reply.message)
                        raise RuntimeError(f"unexpected reply {reply} with sequence "
                                           f"{self.inflight[0] if self.inflight else None} owed")
                    link.close()
                    return
                except OSError:   # ConnectionError, a timeout: find the leader again
                    link.close()
                    link = self._connect()
        except BaseException as exc:  # reported by finish()
            self.error = exc
