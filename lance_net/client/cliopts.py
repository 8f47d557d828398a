"""The options every client command of `lance-net` shares: endpoint, token, TLS, dialect.

Owns turning those flags into ClientOptions and running a command's coroutine; what each command
does lives in lance_net/commands/<name>.py.
"""
from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable

import click

from lance_store.eventloop import run

from .options import DEFAULT_ENDPOINT, ClientOptions, tls_context


def client_options(fn: Callable) -> Callable:
    """Add --endpoint, --token, --tls-ca, --tls-cert, --tls-key, --dialect and --timeout; the
    command receives `endpoint` and `options` (a ClientOptions) instead."""

    @click.option("--endpoint", "-e", metavar="HOST:PORT", default=DEFAULT_ENDPOINT,
                  show_default=True, envvar="LANCE_ENDPOINT", help="Broker to talk to.")
    @click.option("--token", default=None, envvar="LANCE_TOKEN",
                  help="Token sent with Authenticate  [env: LANCE_TOKEN]")
    @click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Use TLS, trusting this CA bundle (PEM).")
    @click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Client certificate (PEM) for brokers that ask for one.")
    @click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Key of --tls-cert.")
    @click.option("--dialect", type=click.Choice(["crc32c", "ieee"]), default="crc32c",
                  show_default=True, help="Checksum dialect; ieee talks to upstream servers.")
    @click.option("--timeout", "request_timeout", type=float, default=30.0, show_default=True,
                  help="Seconds to wait for a reply.")
    @functools.wraps(fn)
    def wrapper(*args, endpoint, token, tls_ca, tls_cert, tls_key, dialect, request_timeout,
                **kwargs):
        ssl = None
        if tls_ca or tls_cert:
            ssl = tls_context(tls_ca, cert_file=tls_cert, key_file=tls_key)
        options = ClientOptions(dialect=dialect, ssl=ssl, token=token,
                                request_timeout_s=request_timeout)
        return fn(*args, endpoint=endpoint, options=options, **kwargs)

    return wrapper


def run_command(main: Awaitable[Any]) -> Any:
    """Run a command's coroutine on the preferred event loop; Ctrl-C ends it quietly."""
    try:
        return run(main)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
