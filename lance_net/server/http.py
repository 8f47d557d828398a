"""The HTTP port: health probes and Prometheus /metrics, in plain asyncio.

Owns HTTP parsing and the four routes; whether the node is live, started or ready is the broker's.

GET /health/live     200 while the process runs
GET /health/startup  200 once recovery finished and the listener is up, else 503
GET /health/ready    200 while the node accepts clients (not starting, not draining), else 503
GET /metrics         Prometheus text format
"""
from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus

from .metrics import CONTENT_TYPE

log = logging.getLogger("lance_net.server.http")

_HEAD_LIMIT = 16 * 1024
_READ_TIMEOUT_S = 10.0
_JSON = "application/json"


async def start(broker, host: str, port: int) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve_one(broker, reader, writer)
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT, reuse_address=True)


async def _serve_one(broker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3:
        status, content_type, body = HTTPStatus.BAD_REQUEST, "text/plain", b"bad request\n"
        method = "GET"
    else:
        method, target, _ = parts
        status, content_type, body = route(broker, method, target.split("?", 1)[0])
    writer.write(
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n".encode("latin-1"))
    if method != "HEAD":
        writer.write(body)
    await writer.drain()


def route(broker, method: str, path: str) -> tuple[HTTPStatus, str, bytes]:
    if method not in ("GET", "HEAD"):
        return HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"GET or HEAD only\n"
    if path == "/metrics":
        return HTTPStatus.OK, CONTENT_TYPE, broker.metrics.render()
    if path == "/health/live":
        return _health(True, {"status": "live", "state": broker.state})
    if path == "/health/startup":
        return _health(broker.started, {"status": broker.state})
    if path == "/health/ready":
        return _health(broker.state == "ready", broker.readiness())
    return HTTPStatus.NOT_FOUND, "text/plain", b"not found: try /health/live, /health/ready, " \
                                               b"/health/startup or /metrics\n"


def _health(ok: bool, document: dict) -> tuple[HTTPStatus, str, bytes]:
    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
    return status, _JSON, (json.dumps(document, sort_keys=True) + "\n").encode()
