"""What the broker reads from lance.toml and its flags, checked once at startup.

Owns turning the settings dict into typed options; loading the file is lance_store.settings' job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from lance_store.config import StoreConfig
from lance_store.settings import ConfigError, store_config

DEFAULT_LWP_PORT = 1992
DEFAULT_HTTP_PORT = 8080


def parse_address(text: str, what: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `:port` (every interface) or a bare host, as (host, port).

    Port 0 asks the kernel for a free port (the bound one is logged).
    """
    value = text.strip()
    if not value:
        raise ConfigError(f"{what}: expected HOST:PORT, found an empty string")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"{what}: expected [IPv6]:PORT, found {text!r}")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:  # a bare host name, IPv4 or IPv6 address
        host, port_text = value, ""
    if not port_text:
        port = default_port
    else:
        try:
            port = int(port_text)
        except ValueError:
            port = -1
        if not 0 <= port < 65536:
            raise ConfigError(f"{what}: expected a port in 0..65535, found {port_text!r} in {text!r}")
    return host or "0.0.0.0", port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class TlsFiles:
    cert: str = ""
    key: str = ""
    client_ca: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


@dataclass(frozen=True)
class Replication:
    """The [replication] section: standalone (l1), or one member of an L3 cluster."""

    mode: str = "l1"
    etcd: tuple[str, ...] = ()
    cluster: str = "lance"
    members: tuple[int, ...] = ()      # every node id of the cluster, this one included
    lease_ttl_s: int = 5
    lease_margin_ms: int = 500

    @property
    def clustered(self) -> bool:
        return self.mode == "l3"


def replication_options(rep: dict, node_id: int, advertise: str) -> Replication:
    mode = rep["mode"]
    if mode not in ("l1", "l3"):
        raise ConfigError(f"replication.mode: expected 'l1' (standalone) or 'l3' (cluster), "
                          f"found {mode!r}")
    etcd = rep["etcd"]
    etcd = (etcd,) if isinstance(etcd, str) else tuple(etcd)
    members = tuple(rep["members"])
    out = Replication(mode, etcd, rep["cluster"], members, int(rep["lease_ttl_s"]),
                      int(rep["lease_margin_ms"]))
    if mode == "l1":
        return out
    if not etcd or not all(isinstance(e, str) and e for e in etcd):
        raise ConfigError(f"replication.etcd: expected one or more etcd URLs, found {rep['etcd']!r}")
    if not out.cluster or "/" in out.cluster:
        raise ConfigError(f"replication.cluster: expected a name without '/', found {out.cluster!r}")
    if not all(isinstance(m, int) and 0 <= m <= 0xFFFF for m in members) or \
            len(set(members)) != len(members):
        raise ConfigError(f"replication.members: expected distinct node ids, found {list(members)!r}")
    if node_id not in members:
        raise ConfigError(f"replication.members: expected this node's id {node_id} among them, "
                          f"found {list(members)!r}")
    if out.lease_margin_ms < 500:
        raise ConfigError(f"replication.lease_margin_ms: expected at least 500, "
                          f"found {out.lease_margin_ms}")
    if out.lease_ttl_s * 1000 <= out.lease_margin_ms:
        raise ConfigError(f"replication.lease_ttl_s: expected more than the margin "
                          f"({out.lease_margin_ms} ms), found {out.lease_ttl_s} s")
    parse_address(advertise, "replication.advertise", DEFAULT_LWP_PORT)
    return out


@dataclass(frozen=True)
class ServerOptions:
    data_dir: str
    node_id: int = 1
    listen: tuple[str, int] = ("127.0.0.1", DEFAULT_LWP_PORT)
    http: tuple[str, int] | None = ("127.0.0.1", DEFAULT_HTTP_PORT)
    advertise: str = ""
    max_payload_size: int = 16 * 1024 * 1024 + 64 * 1024
    idle_timeout_s: float = 30.0
    drain_timeout_s: float = 25.0
    max_connections: int = 20000
    backpressure_bytes: int = 64 * 1024 * 1024
    retention_interval_s: float = 30.0
    writer_cpus: tuple[int, ...] = ()
    store: StoreConfig = field(default_factory=StoreConfig)
    tls: TlsFiles = field(default_factory=TlsFiles)
    auth: dict = field(default_factory=dict)       # the [auth] section, read by server.auth
    config_dir: str = "."                          # relative paths in the config are from here
    replication: Replication = field(default_factory=Replication)

    @classmethod
    def from_settings(cls, cfg: dict, *, data_dir: str | None = None, listen: str | None = None,
                      http: str | None = None, node_id: int | None = None) -> ServerOptions:
        """Options from a loaded lance.toml (`lance_store.settings.load`); flags win over it."""
        net = cfg["network"]
        source = cfg.get("_source")
        config_dir = os.path.dirname(source) if source else os.getcwd()
        http_text = net["http"] if http is None else http
        http_addr = None if http_text.strip().lower() in ("off", "") else \
            parse_address(http_text, "network.http", DEFAULT_HTTP_PORT)
        listen_addr = parse_address(net["listen"] if listen is None else listen,
                                    "network.listen", DEFAULT_LWP_PORT)
        node = int(cfg["node"]["id"] if node_id is None else node_id)
        replication = replication_options(cfg["replication"], node, cfg["replication"]["advertise"])
        positive = {"network.max_payload_size": net["max_payload_size"],
                    "network.idle_timeout_s": net["idle_timeout_s"],
                    "network.drain_timeout_s": net["drain_timeout_s"],
                    "network.max_connections": net["max_connections"],
                    "network.backpressure_bytes": net["backpressure_bytes"],
                    "retention.check_interval_s": cfg["retention"]["check_interval_s"]}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name}: expected a positive number, found {value!r}")
        cpus = cfg["numa"]["cpus"]
        if not all(isinstance(c, int) and c >= 0 for c in cpus):
            raise ConfigError(f"numa.cpus: expected a list of CPU numbers, found {cpus!r}")
        tls = cfg["tls"]
        files = TlsFiles(*(_path(tls[k], config_dir) for k in ("cert", "key", "client_ca")))
        if bool(files.cert) != bool(files.key):
            raise ConfigError("tls: cert and key go together; found only "
                              + ("cert" if files.cert else "key"))
        if files.client_ca and not files.cert:
            raise ConfigError("tls.client_ca: needs tls.cert and tls.key")
        if replication.clustered and files.enabled:
            raise ConfigError("tls: the L3 replication streams between nodes do not speak TLS "
                              "yet; found tls.cert with replication.mode 'l3'")
        try:
            store = store_config(cfg)
        except ValueError as exc:
            raise ConfigError(f"io: {exc}") from None
        return cls(
            data_dir=os.path.abspath(data_dir or _path(cfg["node"]["data_dir"], config_dir)),
            node_id=node,
            listen=listen_addr,
            http=http_addr,
            advertise=cfg["replication"]["advertise"],
            max_payload_size=int(net["max_payload_size"]),
            idle_timeout_s=float(net["idle_timeout_s"]),
            drain_timeout_s=float(net["drain_timeout_s"]),
            max_connections=int(net["max_connections"]),
            backpressure_bytes=int(net["backpressure_bytes"]),
            retention_interval_s=float(cfg["retention"]["check_interval_s"]),
            writer_cpus=tuple(cpus),
            store=store,
            tls=files,
            auth=dict(cfg["auth"]),
            config_dir=config_dir,
            replication=replication,
        )


def _path(value: str, base: str) -> str:
    if not value:
        return ""
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.join(base, value)
