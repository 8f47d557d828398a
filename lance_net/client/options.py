"""How a client reaches a broker: the endpoint, checksum dialect, TLS, token and timeouts.

Owns the connection settings that Producer, Consumer and Admin share; opening connections is `link`'s job.
"""
from __future__ import annotations

import ssl as _ssl
from dataclasses import dataclass, field, replace

from lance_net.protocol import Dialect

from .backoff import Backoff

DEFAULT_PORT = 1992
DEFAULT_ENDPOINT = f"127.0.0.1:{DEFAULT_PORT}"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a bare host (port 1992) as (host, port)."""
    text = endpoint.strip()
    if not text:
        raise ValueError("endpoint: expected HOST:PORT, found an empty string")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"endpoint: expected [IPv6]:PORT, found {endpoint!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return host, DEFAULT_PORT
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError(f"endpoint: expected a port in 1..65535, found {port_text!r} in {endpoint!r}")
    return host, port


def tls_context(ca_file: str | None = None, *, cert_file: str | None = None,
                key_file: str | None = None, verify: bool = True) -> _ssl.SSLContext:
    """A client TLS context trusting `ca_file` (else the system store), with an optional client cert."""
    context = _ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = _ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


@dataclass(frozen=True)
class ClientOptions:
    """Settings shared by every client object; any of them may be passed as a keyword instead.

    dialect: "crc32c" (this project) or "ieee" (to talk to upstream servers).
    ssl: an ssl.SSLContext to wrap connections in TLS; server_hostname defaults to the host.
    token: sent with Authenticate right after connecting.
    max_redirects: NOT_LEADER answers followed per request before giving up.
    failover_timeout_s: with several seed endpoints (a cluster), how long a request keeps
        looking for a node that answers it (a leader election takes a few seconds).
    """

    dialect: str = "crc32c"
    ssl: _ssl.SSLContext | None = None
    server_hostname: str | None = None
    token: str | None = None
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    max_redirects: int = 5
    failover_timeout_s: float = 20.0
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        Dialect(self.dialect)  # raises ValueError naming the bad value

    @property
    def protocol_dialect(self) -> Dialect:
        return Dialect(self.dialect)

    def updated(self, **changes) -> ClientOptions:
        return replace(self, **changes) if changes else self


OPTION_NAMES = frozenset(ClientOptions.__dataclass_fields__)


def split_options(options: ClientOptions | None, kwargs: dict) -> ClientOptions:
    """ClientOptions from an explicit object plus keyword overrides (which are removed from kwargs)."""
    changes = {name: kwargs.pop(name) for name in list(kwargs) if name in OPTION_NAMES}
    return (options or ClientOptions()).updated(**changes)
