"""The broker process: opens the store, listens, serves, applies retention, and drains on a signal.

Owns the node's lifecycle and what connections share (topics by id, group committers, producer
sequences, committed offsets, long-poll waiters, thread pools); a connection's frames are
`connection`'s, command rules `produce`, `consume` and `admin`'s.

Life: starting (HTTP up, recovery running) -> ready (LWP listening) -> draining
(SIGTERM/SIGINT: no new connections or reads; batches already received are
written and acked) -> stopped. A second signal stops at once, still after any
group write that already started, so no batch is left half-written.

In L3 (`cluster`) the LWP port opens before the node joins; the node reports "joining"
instead of "ready" while it may not acknowledge (no lease, no leader, not following), and
after the drain it hands its leadership over before it stops.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import lance_store
from lance_store import eventloop
from lance_net.protocol import UNKNOWN_TOPIC
from lance_store import LanceError, Topic, UnknownTopicError

from . import http
from .auth import TokenBook
from .cluster import ClusterRole
from .connection import ClientConnection
from .ingest import GroupCommitter, pin_cpus
from .longpoll import Watermarks
from .metrics import BrokerMetrics
from .offsets import OffsetBook
from .options import ServerOptions, format_address
from .producers import ProducerBook
from .refusal import Refused
from .tls import server_context

log = logging.getLogger("lance_net.server")

STARTING, READY, DRAINING, STOPPED = "starting", "ready", "draining", "stopped"
JOINING = "joining"   # L3: listening, but not (yet) leading or following

# One socket read lands here before it is copied into the connection's buffer:
# large reads mean few trips through the event loop per megabyte ingested.
READ_BUFFER_BYTES = 1 << 20
LISTEN_BACKLOG = 4096
TLS_HANDSHAKE_TIMEOUT_S = 10.0
READER_THREADS = 4


class Broker:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.tokens = TokenBook.from_settings(options.auth, options.config_dir)
        self.ssl = server_context(options.tls)
        self.metrics = BrokerMetrics()
        self._state = STARTING
        self.cluster: ClusterRole | None = None
        self.started = False
        self.accepting = False
        self.store: lance_store.Store | None = None
        self.offsets: OffsetBook | None = None
        self.connections: set[ClientConnection] = set()
        self.producers = ProducerBook()
        self.watermarks = Watermarks()
        self.read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))
        self.lwp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self._topics: dict[int, Topic] = {}
        self._committers: dict[int, GroupCommitter] = {}
        self._admin = ThreadPoolExecutor(1, thread_name_prefix="lance-admin")
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="lance-reader")
        # [numa] cpus: the event loop fills and submits every write, so it is what gets pinned.
        pin_cpus(options.writer_cpus)
        self._server: asyncio.AbstractServer | None = None
        self._http: asyncio.AbstractServer | None = None
        self._background: list[asyncio.Task] = []
        self._stop: asyncio.Event | None = None
        self._hard_stop: asyncio.Event | None = None

    @property
    def state(self) -> str:
        if self._state == READY and self.cluster is not None and not self.cluster.ready():
            return JOINING
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value

    # -- what connections share -------------------------------------------------------------

    def topics(self) -> list[Topic]:
        return list(self._topics.values())

    def topic_ids(self):
        return self._topics.keys()

    def topic(self, topic_id: int) -> Topic:
        found = self._topics.get(topic_id)
        if found is None:
            raise Refused.of(UNKNOWN_TOPIC, str(topic_id))
        return found

    def topic_named(self, name: str) -> Topic | None:
        try:
            return self.store.topic(name)
        except UnknownTopicError:
            return None

    def committer(self, topic: Topic) -> GroupCommitter:
        found = self._committers.get(topic.id)
        if found is None:
            found = GroupCommitter(topic, self.metrics, self._durable,
                                   self.options.backpressure_bytes,
                                   self.cluster.gate if self.cluster is not None else None)
            self._committers[topic.id] = found
        return found

    def _durable(self, topic: Topic) -> None:
        if self.cluster is not None:
            self.cluster.leader_wrote(topic)   # long polls wake when a majority holds it
        else:
            self.watermarks.advanced(topic.id)

    def readable_end(self, topic: Topic) -> int:
        """Where Fetch stops: the high watermark, or in L3 the committed offset."""
        if self.cluster is not None:
            return min(self.cluster.readable_end(topic), topic.high_watermark)
        return topic.high_watermark

    def run_admin(self, fn, *args) -> asyncio.Future:
        """Run a blocking store call (fsyncs, renames) on the one admin thread, in order."""
        return asyncio.get_running_loop().run_in_executor(self._admin, fn, *args)

    def run_read(self, fn, *args) -> asyncio.Future:
        # Reads run beside seals, renames and truncations: the topic counts the readers of
        # each cached descriptor and closes it only after the last one.
        return asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def create_topic(self, name: str, retention: dict | None) -> Topic:
        if self.cluster is not None:
            return await self.cluster.create_topic(name, retention)
        return await self.create_local_topic(name, retention)

    async def create_local_topic(self, name: str, retention: dict | None, *,
                                 topic_id: int | None = None) -> Topic:
        topic = await self.run_admin(lambda: self.store.create_topic(
            name, retention, exist_ok=True, topic_id=topic_id))
        if topic.id not in self._topics:
            self._topics[topic.id] = topic
            log.info("topic %s created (id %d, retention %s)", name, topic.id,
                     topic.retention.as_dict())
        return topic

    async def delete_topic(self, topic: Topic) -> int:
        if self.cluster is not None:
            return await self.cluster.delete_topic(topic)
        return await self.delete_local_topic(topic)

    async def delete_local_topic(self, topic: Topic) -> int:
        if self._topics.get(topic.id) is not topic:
            return topic.id   # already going (L3: the leader's delete and its etcd watch meet)
        # Unlisted first, so new frames get UNKNOWN_TOPIC; then the last group finishes.
        self._topics.pop(topic.id, None)
        committer = self._committers.pop(topic.id, None)
        if committer is not None:
            committer.close(f"{UNKNOWN_TOPIC}: {topic.id} (deleted)")
            await committer.wait_idle()
        topic_id = await self.run_admin(self.store.delete_topic, topic.name)
        self.producers.forget_topic(topic_id)
        self.offsets.forget(topic_id, topic.name)
        self.watermarks.advanced(topic_id)
        log.info("topic %s deleted (id %d)", topic.name, topic_id)
        return topic_id

    async def set_retention(self, topic: Topic, max_age_secs: int, max_bytes: int) -> None:
        if self.cluster is not None:
            await self.cluster.set_retention(topic, max_age_secs, max_bytes)
        else:
            await self.run_admin(topic.set_retention, max_age_secs, max_bytes)

    async def new_producer_id(self) -> int:
        if self.cluster is not None:
            return await self.cluster.new_producer_id()
        return await self.run_admin(self.store.new_producer_id)

    def leadership_began(self) -> None:
        """A new leadership: producer sequences are read from the log again (it may hold
        batches another leader wrote), and each topic gets a fresh ingest queue."""
        self.producers = ProducerBook()
        self._committers.clear()

    async def leadership_ended(self, reason: str) -> None:
        """Refuse what waits to be written (a group already writing finishes; its acks
        are refused at the gate), so that nothing more lands here as a leader's write."""
        committers, self._committers = list(self._committers.values()), {}
        for committer in committers:
            committer.close(reason)
        await asyncio.gather(*(c.wait_idle() for c in committers))
        self.producers = ProducerBook()

    def cluster_status(self) -> dict:
        if self.cluster is not None:
            return self.cluster.status()
        node_id = self.store.node_id
        return {
            "node_id": node_id, "mode": "standalone", "is_leader": True, "leader_id": node_id,
            "leader_addr": self.advertised_address(), "epoch": 0, "current_term": 0,
            "node_count": 1, "healthy_nodes": 1, "quorum_available": True, "peer_states": {},
        }

    def advertised_address(self) -> str:
        host, port = self.lwp_address or self.options.listen
        if host in ("0.0.0.0", "::", ""):
            return self.options.advertise
        return format_address(host, port)

    def readiness(self) -> dict:
        out = {"status": self.state, "connections": len(self.connections),
                "topics": len(self._topics),
                "recovery_warnings": len(self.store.warnings) if self.store else 0}
        if self.cluster is not None:
            status = self.cluster.status()
            out.update(leader_id=status["leader_id"], is_leader=status["is_leader"],
                       epoch=status["epoch"])
        return out

    # -- life -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until a signal; the process exit code (0 after a complete drain)."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._hard_stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info("event loop: %s", _loop_name(loop))
        _raise_open_files_limit(self.options.max_connections)
        try:
            if self.options.http is not None:
                self._http = await http.start(self, *self.options.http)
                self.http_address = self._http.sockets[0].getsockname()[:2]
                log.info("http: serving health and metrics on http://%s",
                         format_address(*self.http_address))
            try:
                self.store = await loop.run_in_executor(self._admin, self._open_store)
            except (LanceError, OSError, ValueError) as exc:
                log.error("cannot open data directory %s: %s", self.options.data_dir, exc)
                return 1
            if not self._stop.is_set():
                await self._listen()
                if self.options.replication.clustered:
                    self.cluster = ClusterRole(self)
                    self.cluster.start()
                self._background = [loop.create_task(self._retention_loop()),
                                    loop.create_task(self._idle_loop())]
                await self._stop.wait()
            return await self._drain()
        finally:
            for task in self._background:
                task.cancel()
            if self.cluster is not None:
                await self.cluster.stop()
            if self._http is not None:
                self._http.close()
            await loop.run_in_executor(None, self._close_store)
            self.state = STOPPED

    def _open_store(self) -> lance_store.Store:
        """Open (and recover) the data directory; runs on the admin thread."""
        options = self.options
        started = time.monotonic()
        store = lance_store.open(options.data_dir, create=True, node_id=options.node_id,
                                 config=options.store)
        log.info("data directory: %s (node %d, cluster %s)", store.path, store.node_id,
                 store.cluster_id)
        log.info("io backend: %s, durability %s", store.backend.name, options.store.durability)
        for warning in store.warnings:
            log.warning("recovery: %s", warning)
        self.offsets = OffsetBook(store.path, self._admin)
        for warning in self.offsets.load(store.topics()):
            log.warning("offsets: %s", warning)
        for topic in store.topics():
            self._topics[topic.id] = topic
            log.info("topic %s (id %d): low %d, high %d", topic.name, topic.id,
                     topic.low_watermark, topic.high_watermark)
        log.info("recovery: %d topic(s), %d warning(s) in %.2f s", len(self._topics),
                 len(store.warnings), time.monotonic() - started)
        self.metrics.watch(lambda: list(self._topics.values()), self.offsets.snapshot)
        return store

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.options.listen
        extra = {"ssl": self.ssl, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT_S} \
            if self.ssl is not None else {}
        self._server = await loop.create_server(
            lambda: ClientConnection(self), host, port, backlog=LISTEN_BACKLOG,
            reuse_address=True, **extra)
        sock = self._server.sockets[0]
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lwp_address = sock.getsockname()[:2]
        tls = "off"
        if self.ssl is not None:
            tls = "on, client certificates required" if self.options.tls.client_ca else "on"
        log.info("lwp: listening on %s (tls %s, auth %s)", format_address(*self.lwp_address), tls,
                 f"on, {len(self.tokens)} token(s)" if self.tokens.enabled else "off")
        self.state = READY
        self.started = True
        self.accepting = True
        self.metrics.ready.set(1)
        log.info("ready")

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if not self._stop.is_set():
            log.info("%s: draining (up to %.0f s; a second signal stops at once)", name,
                     self.options.drain_timeout_s)
            self._stop.set()
        else:
            log.warning("%s again: stopping now", name)
            self._hard_stop.set()

    async def _drain(self) -> int:
        loop = asyncio.get_running_loop()
        began = loop.time()
        self.state = DRAINING
        self.accepting = False
        self.metrics.ready.set(0)
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.begin_drain()
        self.watermarks.wake_all()
        settle = loop.create_task(self._settle())
        hard = loop.create_task(self._hard_stop.wait())
        done, _ = await asyncio.wait({settle, hard}, timeout=self.options.drain_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        clean = settle in done
        settle.cancel()
        hard.cancel()
        if not clean:
            why = "a second signal" if self._hard_stop.is_set() else \
                f"drain_timeout_s ({self.options.drain_timeout_s:g} s) passed"
            log.warning("stopping before every received batch was acknowledged: %s", why)
            for committer in self._committers.values():
                committer.halt()
        for conn in list(self.connections):
            conn.close() if clean else conn.abort()
        # A group already being written finishes, so no batch is left half-written.
        await asyncio.gather(*(c.wait_idle() for c in list(self._committers.values())))
        log.info("%s in %.2f s", "drained" if clean else "stopped", loop.time() - began)
        return 0 if clean else 1

    async def _settle(self) -> None:
        """Return once every received batch is durable and every reply written."""
        while True:
            await asyncio.gather(*(c.wait_idle() for c in list(self._committers.values())))
            if all(c.idle for c in self._committers.values()) and \
                    all(conn.settled for conn in list(self.connections)):
                return
            await asyncio.sleep(0.01)

    def _close_store(self) -> None:
        self._readers.shutdown(wait=True, cancel_futures=True)
        self._admin.shutdown(wait=True)
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- background work --------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        interval = self.options.retention_interval_s
        while True:
            await asyncio.sleep(interval)
            for topic in list(self._topics.values()):
                rule = topic.retention
                if not (rule.max_age_secs or rule.max_bytes):
                    continue
                try:
                    removed = await self.run_admin(topic.apply_retention)
                except (LanceError, OSError) as exc:
                    log.warning("retention: topic %s: %s", topic.name, exc)
                    continue
                if removed:
                    self.metrics.retention_deleted.labels(topic.name).inc(len(removed))
                    log.info("retention: topic %s: deleted %s; low watermark now %d",
                             topic.name, ", ".join(removed), topic.low_watermark)

    async def _idle_loop(self) -> None:
        """Close connections that sent no whole frame for idle_timeout_s (a slow trickle of
        bytes does not count) and are owed nothing."""
        timeout = self.options.idle_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.05, min(1.0, timeout / 4)))
            now = loop.time()
            for conn in list(self.connections):
                if now - conn.last_frame > timeout and not conn.owes_replies:
                    self.metrics.idle_closed.inc()
                    log.debug("%s: idle for %.0f s: closing", conn.peer, now - conn.last_frame)
                    conn.close()


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    module = type(loop).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def _raise_open_files_limit(wanted: int) -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one: each connection is a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open files limit stays %d: %s", soft, exc)
    if soft < wanted:
        log.warning("open files limit %d is below network.max_connections %d", soft, wanted)
    else:
        log.info("open files limit: %d", soft)


def run(options: ServerOptions) -> int:
    """Run a broker until it stops, on LANCE's preferred loop. Returns the exit code."""
    return eventloop.run(Broker(options).run())
