"""Real brokers for tests: `lance-net serve` subprocesses on free loopback ports, and a raw client.

Fixtures: `broker` (a started broker on a fresh data directory), `broker_factory` (start
brokers with a config of your own), `module_broker` (one broker shared by a test module).
Helpers: `Broker` (start/stop/kill/restart/signal a broker process), `RawClient` (a blocking
socket driven by the sans-IO protocol), `batches_of` (fetched bytes as batches and records),
`make_certificates` (a throwaway CA, server and client certificate).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from lance_net.protocol import Ack, CreateTopic, Dialect, ErrorResponse, Fetch, Ingest, TopicResponse
from lance_net.replication.testing import BlockingLink, lance_net_command  # noqa: F401  (tests import it from here)
from lance_store.records import encode, iter_tlv
from lance_store.segment.reader import split_batches
from lance_store.settings import to_toml

START_TIMEOUT_S = 30
_LWP_LINE = re.compile(r"lwp: listening on \[?([^\]\s]+?)\]?:(\d+) ")
_HTTP_LINE = re.compile(r"http: serving health and metrics on http://\[?([^\]\s]+?)\]?:(\d+)")


class BrokerFailed(RuntimeError):
    pass


class Broker:
    """One `lance-net serve` process on 127.0.0.1.

    The first start binds free ports (port 0) and reads them from the log; later
    starts (restart) reuse them, so clients reconnect to the same address.
    `config` is a dict of lance.toml sections (e.g. {"network": {"idle_timeout_s": 2}})
    written to `<root>/lance.toml`, followed by `extra_toml`. The log of every run goes to `<root>/broker.log`.
    """

    def __init__(self, root: Path, *, config: dict | None = None, data_dir: Path | None = None,
                 extra_args: tuple[str, ...] = (), extra_toml: str = ""):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir else self.root / "data"
        self.config = config or {}
        self.extra_args = tuple(extra_args)
        self.extra_toml = extra_toml  # appended as is: for what a dict cannot say ([[auth.tokens]])
        self.host = "127.0.0.1"
        self.port = 0
        self.http_port = 0
        self.log_path = self.root / "broker.log"
        self.config_path = self.root / "lance.toml"
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    # -- addresses --------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __iter__(self):
        """`host, port, http_port, data_dir = broker`"""
        return iter((self.host, self.port, self.http_port, self.data_dir))

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.http_port}{path}"

    # -- life -------------------------------------------------------------------------------

    def command(self) -> list[str]:
        self.config_path.write_text((to_toml(self.config) if self.config else "")
                                    + "\n" + self.extra_toml)
        return [*lance_net_command(), "serve", "--data-dir", str(self.data_dir),
                "--listen", f"{self.host}:{self.port}", "--http", f"{self.host}:{self.http_port}",
                "--config", str(self.config_path), *self.extra_args]

    def start(self, timeout: float = START_TIMEOUT_S) -> Broker:
        """Start the process and return once /health/ready answers 200."""
        if self.running:
            raise BrokerFailed("already running")
        env = {k: v for k, v in os.environ.items() if k != "LANCE_CONFIG"}
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.root, env=env)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            lwp, web = _LWP_LINE.search(text), _HTTP_LINE.search(text)
            if lwp and web:
                self.port, self.http_port = int(lwp.group(2)), int(web.group(2))
                break
            self._check_alive(deadline, "to listen")
            time.sleep(0.02)
        while self.http_status("/health/ready") != 200:
            self._check_alive(deadline, "to be ready")
            time.sleep(0.02)
        return self

    def _check_alive(self, deadline: float, what: str) -> None:
        if self.process.poll() is not None:
            raise BrokerFailed(f"broker exited with {self.process.returncode} before it "
                               f"came {what}:\n{self.log()}")
        if time.monotonic() > deadline:
            self.kill()
            raise BrokerFailed(f"broker took too long {what}:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        if not self.running:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BrokerFailed(f"broker did not stop within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the data directory can tell."""
        if self.running:
            self.process.kill()
            self.process.wait(30)

    def restart(self, *, kill: bool = False, timeout: float = START_TIMEOUT_S) -> Broker:
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again on the same ports."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    # -- looking at it ----------------------------------------------------------------------

    def log(self) -> str:
        """This run's log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def http_get(self, path: str, timeout: float = 10) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def http_status(self, path: str) -> int | None:
        try:
            return self.http_get(path, timeout=2)[0]
        except (OSError, urllib.error.URLError):
            return None

    def metrics(self) -> str:
        status, body = self.http_get("/metrics")
        assert status == 200, body
        return body

    def metric(self, name: str, **labels) -> float:
        """The value of one sample of /metrics (0.0 when absent)."""
        return metric_value(self.metrics(), name, **labels)

    def client(self, **kwargs) -> RawClient:
        return RawClient(self.host, self.port, **kwargs)


def metric_value(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        if sample != name:
            continue
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if found == want:
            return float(value)
    return 0.0


# -- a raw LWP client ---------------------------------------------------------------------------

class RawClient(BlockingLink):
    """A blocking LWP connection with the tests' conveniences (raw bytes, shortcuts)."""

    def __init__(self, host: str, port: int, *, dialect: Dialect = Dialect.CRC32C,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 10):
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(address, timeout, dialect=dialect, ssl_context=ssl_context)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed_by_server(self, timeout: float = 10) -> bool:
        """Whether the server closes the connection (reading and dropping what it sends)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(1 << 16):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False

    # -- conveniences -----------------------------------------------------------------------

    def create_topic(self, name: str) -> dict:
        reply = self.request(CreateTopic(name))
        assert isinstance(reply, TopicResponse), reply
        return reply.data

    def ingest(self, topic_id: int, batch_id: int, values, *, timestamp_ns: int = 0,
               compressed: bool = False) -> None:
        payload, count = encode(values)
        if compressed:
            self.send(Ingest.compress(topic_id=topic_id, batch_id=batch_id, record_count=count,
                                      records=payload, timestamp_ns=timestamp_ns))
        else:
            self.send(Ingest(topic_id, batch_id, count, payload, timestamp_ns))

    def produce(self, topic_id: int, batch_id: int, values, **kwargs):
        """Send one batch and return the server's answer (Ack or ErrorResponse)."""
        self.ingest(topic_id, batch_id, values, **kwargs)
        reply = self.recv()
        assert isinstance(reply, (Ack, ErrorResponse)), reply
        return reply

    def fetch(self, topic_id: int, start: int, max_bytes: int = 1 << 20,
              max_wait_ms: int | None = None, timeout: float | None = None):
        return self.request(Fetch(topic_id, start, max_bytes, max_wait_ms), timeout)

    def fetch_all(self, topic_id: int, start: int = 0) -> list[Batch]:
        """Every batch from `start` to the high watermark."""
        out: list[Batch] = []
        offset = start
        while True:
            reply = self.fetch(topic_id, offset)
            assert not isinstance(reply, ErrorResponse), reply
            if not len(reply.data):
                return out
            out += batches_of(reply.data)
            offset = reply.next_offset


@dataclass
class Batch:
    offset: int
    producer_id: int
    producer_seq: int
    records: list[bytes]
    types: list[int]


def batches_of(data) -> list[Batch]:
    """Fetched bytes (whole batches) as Batch objects with their record values."""
    out = []
    for view in split_batches(bytes(data)):
        payload = bytes(view.payload)
        recs = list(iter_tlv(payload))
        out.append(Batch(view.offset, view.header.producer_id, view.header.producer_seq,
                         [payload[vp:vp + n] for _, _, _, vp, n in recs],
                         [t for _, t, _, _, _ in recs]))
    return out


# -- certificates -------------------------------------------------------------------------------

@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, *, with_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def make_certificates(folder: Path) -> Certificates:
    """A throwaway CA and a server (127.0.0.1, localhost) and client certificate it signed."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _certificates_with_cryptography(folder)
    except ImportError:
        return _certificates_with_openssl(folder)


def _certificates_with_cryptography(folder: Path) -> Certificates:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    def issue(cn: str, issuer_name, issuer_key, *, ca: bool, usage=None, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer_name or name(cn))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    ca_key, ca_cert = issue("lance test CA", None, None, ca=True)
    server_key, server_cert = issue(
        "localhost", ca_cert.subject, ca_key, ca=False, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key, client_cert = issue("lance test client", ca_cert.subject, ca_key, ca=False,
                                    usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    certs = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                         folder / "client.pem", folder / "client.key")
    pem = serialization.Encoding.PEM
    certs.ca.write_bytes(ca_cert.public_bytes(pem))
    certs.server_cert.write_bytes(server_cert.public_bytes(pem))
    certs.client_cert.write_bytes(client_cert.public_bytes(pem))
    write_key(server_key, certs.server_key)
    write_key(client_key, certs.client_key)
    return certs


def _certificates_with_openssl(folder: Path) -> Certificates:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", "/CN=lance test CA", "-keyout", "ca.key", "-out", "ca.pem")
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                       "extendedKeyUsage=serverAuth\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for role, cn in (("server", "localhost"), ("client", "lance test client")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={cn}", "-keyout", f"{role}.key", "-out", f"{role}.csr")
        run("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", f"{role}.ext", "-out", f"{role}.pem")
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                        folder / "client.pem", folder / "client.key")


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
def broker_factory(tmp_path):
    """make(config=None, *, name="broker", data_dir=None, start=True, extra_args=(), extra_toml="")
    -> Broker; every broker made is killed after the test."""
    made: list[Broker] = []

    def make(config: dict | None = None, *, name: str = "broker", data_dir: Path | None = None,
             start: bool = True, extra_args: tuple[str, ...] = (), extra_toml: str = "") -> Broker:
        broker = Broker(tmp_path / name, config=config, data_dir=data_dir, extra_args=extra_args,
                        extra_toml=extra_toml)
        made.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in made:
        broker.kill()


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A started broker on a fresh data directory (yields host, port, http_port, data_dir as attributes)."""
    return broker_factory()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory) -> Broker:
    """One broker for a whole test module; tests must use topic names of their own."""
    broker = Broker(tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker
    broker.kill()


def json_body(body: str) -> dict:
    return json.loads(body)
