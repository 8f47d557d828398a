"""A small etcd v3 client over etcd's HTTP/JSON gateway: keys, transactions, leases, watches.

Owns the HTTP/1.1 exchange (asyncio streams) and the JSON shapes of etcd's API; it knows
nothing of LANCE's keys, which belong to `coordinator`.
"""
from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Iterable, Sequence
from urllib.parse import urlsplit

Key = str | bytes

# etcd's gRPC status codes that a caller may want to act on.
NOT_FOUND = 5
FAILED_PRECONDITION = 9
UNAVAILABLE = 14

_MAX_HEADER_LINES = 100


class EtcdError(Exception):
    """etcd refused a request, or answered with something this client cannot read."""

    def __init__(self, endpoint: str, key: Key | None, message: str, *, code: int | None = None):
        where = endpoint if key is None else f"{endpoint} key {_show(key)}"
        super().__init__(f"etcd {where}: {message}" + ("" if code is None else f" (code {code})"))
        self.endpoint = endpoint
        self.key = key
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered: every one refused the connection or timed out."""


class LeaseNotFound(EtcdError):
    """The lease expired or was revoked."""


class WatchCanceled(EtcdError):
    """etcd ended a watch (compacted history, or the watch was canceled)."""


def _show(key: Key) -> str:
    return repr(key.decode(errors="replace") if isinstance(key, bytes) else key)


def _bytes(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def _b64(data: Key) -> str:
    return base64.b64encode(_bytes(data)).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: Key) -> bytes:
    """The range_end that selects every key starting with `prefix`."""
    p = bytearray(_bytes(prefix))
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"  # every key


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict) -> "KeyValue":
        return cls(_unb64(kv.get("key")), _unb64(kv.get("value")), int(kv.get("create_revision", 0)),
                   int(kv.get("mod_revision", 0)), int(kv.get("version", 0)), int(kv.get("lease", 0)))


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str           # "PUT" or "DELETE"
    kv: KeyValue
    revision: int       # the revision of the response that carried the event


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: tuple    # etcd's response objects, one per operation of the branch taken

    def ranges(self) -> list[list[KeyValue]]:
        """The key-values of each range operation of the branch taken, in order."""
        return [[KeyValue.from_json(kv) for kv in r["response_range"].get("kvs", [])]
                for r in self.responses if "response_range" in r]


# -- transaction building blocks (etcd's Compare and RequestOp shapes) ----------------------

def compare_created(key: Key, revision: int) -> dict:
    """True when the key's create_revision equals `revision` (0: the key is absent)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": str(revision)}


def compare_modified(key: Key, revision: int) -> dict:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def compare_value(key: Key, value: Key) -> dict:
    return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}


def put_op(key: Key, value: Key, *, lease: int = 0) -> dict:
    req = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def range_op(key: Key, *, prefix: bool = False) -> dict:
    req = {"key": _b64(key)}
    if prefix:
        req["range_end"] = _b64(prefix_end(key))
    return {"request_range": req}


def delete_op(key: Key) -> dict:
    return {"request_delete_range": {"key": _b64(key)}}


# -- HTTP/1.1 --------------------------------------------------------------------------------

class _HttpConnection:
    """One keep-alive HTTP/1.1 connection to an endpoint."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> "_HttpConnection":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, host: str, path: str, body: bytes) -> None:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body)

    async def read_head(self) -> tuple[int, dict]:
        line = await self.reader.readline()
        if not line:
            raise ConnectionResetError("connection closed before a response")
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ConnectionResetError(f"not an HTTP response: {line[:60]!r}")
        headers = {}
        for _ in range(_MAX_HEADER_LINES):
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                return int(parts[1]), headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raise ConnectionResetError("too many response header lines")

    async def read_chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" at its end."""
        size_line = await self.reader.readline()
        if not size_line:
            raise ConnectionResetError("connection closed inside a chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b""
        data = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return data

    async def read_body(self, headers: dict) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while chunk := await self.read_chunk():
                parts.append(chunk)
            return b"".join(parts)
        return await self.reader.readexactly(int(headers.get("content-length", "0")))

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class _Endpoint:
    url: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "_Endpoint":
        parts = urlsplit(url if "//" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"etcd endpoint {url!r}: expected http://host:port")
        return cls(f"http://{parts.hostname}:{parts.port or 2379}", parts.hostname, parts.port or 2379)


class EtcdClient:
    """Requests to one etcd cluster, failing over between its endpoints in order.

    Every call is a coroutine with a deadline of `timeout` seconds per endpoint tried.
    """

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 5.0):
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("etcd endpoints: expected at least one URL")
        self.endpoints = [_Endpoint.parse(e) for e in endpoints]
        self.timeout = timeout
        self._current = 0
        self._idle: dict[str, list[_HttpConnection]] = {}
        self._closed = False

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to first."""
        return self.endpoints[self._current].url

    # -- plumbing ------------------------------------------------------------

    async def _call(self, path: str, body: dict, key: Key | None = None) -> dict:
        if self._closed:
            raise EtcdError(self.endpoint + path, key, "client is closed")
        payload = json.dumps(body).encode()
        failures = []
        for i in range(len(self.endpoints)):
            at = (self._current + i) % len(self.endpoints)
            ep = self.endpoints[at]
            try:
                status, data = await asyncio.wait_for(self._exchange(ep, path, payload), self.timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                failures.append(f"{ep.url}: {type(exc).__name__}: {exc}".rstrip(": "))
                continue
            self._current = at
            return self._decode(ep.url + path, key, status, data)
        raise EtcdUnavailable(self.endpoint + path, key, "no endpoint answered: " + "; ".join(failures),
                              code=UNAVAILABLE)

    async def _exchange(self, ep: _Endpoint, path: str, payload: bytes) -> tuple[int, bytes]:
        idle = self._idle.setdefault(ep.url, [])
        conn = idle.pop() if idle else None
        reused = conn is not None
        if conn is None:
            conn = await _HttpConnection.open(ep.host, ep.port)
        try:
            conn.send(f"{ep.host}:{ep.port}", path, payload)
            status, headers = await conn.read_head()
            data = await conn.read_body(headers)
        except (OSError, asyncio.IncompleteReadError):
            conn.close()
            if reused:  # the server may have closed an idle connection: one fresh try
                return await self._exchange(ep, path, payload)
            raise
        except BaseException:
            conn.close()
            raise
        if headers.get("connection", "").lower() == "close" or self._closed:
            conn.close()
        else:
            idle.append(conn)
        return status, data

    @staticmethod
    def _decode(where: str, key: Key | None, status: int, data: bytes) -> dict:
        try:
            reply = json.loads(data) if data else {}
        except ValueError:
            raise EtcdError(where, key, f"HTTP {status}, body is not JSON: {data[:120]!r}") from None
        if status != 200 or "error" in reply:
            message = reply.get("message") or reply.get("error") or f"HTTP {status}"
            code = reply.get("code")
            cls = LeaseNotFound if "lease not found" in str(message) else EtcdError
            raise cls(where, key, str(message), code=code)
        return reply

    # -- keys ----------------------------------------------------------------

    async def range(self, key: Key, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under the prefix) and the store revision of the answer."""
        req = {"key": _b64(key)}
        if prefix:
            req["range_end"] = _b64(prefix_end(key))
        reply = await self._call("/v3/kv/range", req, key)
        return ([KeyValue.from_json(kv) for kv in reply.get("kvs", [])],
                int(reply.get("header", {}).get("revision", 0)))

    async def get(self, key: Key) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def put(self, key: Key, value: Key, *, lease: int = 0) -> int:
        """Store the value; returns the revision of the write."""
        req = {"key": _b64(key), "value": _b64(value)}
        if lease:
            req["lease"] = str(lease)
        reply = await self._call("/v3/kv/put", req, key)
        return int(reply.get("header", {}).get("revision", 0))

    async def delete(self, key: Key, *, prefix: bool = False) -> int:
        """Delete the key (or the prefix); returns how many keys went."""
        req = {"key": _b64(key)}
        if prefix:
            req["range_end"] = _b64(prefix_end(key))
        reply = await self._call("/v3/kv/deleterange", req, key)
        return int(reply.get("deleted", 0))

    async def txn(self, compare: Iterable[dict], success: Iterable[dict],
                  failure: Iterable[dict] = (), *, key: Key | None = None) -> TxnResult:
        """One etcd transaction; `key` only names the request in errors."""
        compare, success, failure = list(compare), list(success), list(failure)
        if key is None and compare:
            key = _unb64(compare[0]["key"])
        reply = await self._call("/v3/kv/txn",
                                 {"compare": compare, "success": success, "failure": failure}, key)
        return TxnResult(bool(reply.get("succeeded", False)),
                         int(reply.get("header", {}).get("revision", 0)),
                         tuple(reply.get("responses", [])))

    # -- leases --------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, the TTL etcd granted, in seconds)."""
        reply = await self._call("/v3/lease/grant", {"TTL": str(int(ttl))})
        return int(reply["ID"]), int(reply.get("TTL", 0))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease; returns its TTL. LeaseNotFound once it expired or was revoked."""
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)}, f"lease {lease_id:x}")
        ttl = int(reply.get("result", {}).get("TTL", 0))
        if ttl <= 0:
            raise LeaseNotFound(self.endpoint + "/v3/lease/keepalive", f"lease {lease_id:x}",
                                "lease expired or revoked", code=NOT_FOUND)
        return ttl

    async def lease_revoke(self, lease_id: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease_id)}, f"lease {lease_id:x}")

    # -- watches -------------------------------------------------------------

    def watch(self, key: Key, *, prefix: bool = False, start_revision: int = 0) -> "Watch":
        """Changes of the key (or prefix) from `start_revision` (0: from now on).

        Use as `async with client.watch(k) as w: async for event in w: ...`.
        """
        return Watch(self, key, prefix=prefix, start_revision=start_revision)

    async def close(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class Watch:
    """One etcd watch stream, on a connection of its own."""

    def __init__(self, client: EtcdClient, key: Key, *, prefix: bool, start_revision: int):
        self.client = client
        self.key = key
        self.prefix = prefix
        self.start_revision = start_revision
        self._conn: _HttpConnection | None = None
        self._where = ""
        self._pending: list[WatchEvent] = []
        self._text = ""
        self._decoder = json.JSONDecoder()

    async def __aenter__(self) -> "Watch":
        req = {"key": _b64(self.key)}
        if self.prefix:
            req["range_end"] = _b64(prefix_end(self.key))
        if self.start_revision:
            req["start_revision"] = str(self.start_revision)
        body = json.dumps({"create_request": req}).encode()
        failures = []
        for i in range(len(self.client.endpoints)):
            ep = self.client.endpoints[(self.client._current + i) % len(self.client.endpoints)]
            self._where = ep.url + "/v3/watch"
            try:
                await asyncio.wait_for(self._open(ep, body), self.client.timeout)
                return self
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                self._close()
                failures.append(f"{ep.url}: {type(exc).__name__}: {exc}")
        raise EtcdUnavailable(self._where, self.key, "no endpoint answered: " + "; ".join(failures),
                              code=UNAVAILABLE)

    async def _open(self, ep: _Endpoint, body: bytes) -> None:
        self._conn = await _HttpConnection.open(ep.host, ep.port)
        self._conn.send(f"{ep.host}:{ep.port}", "/v3/watch", body)
        status, headers = await self._conn.read_head()
        if status != 200:
            data = await self._conn.read_body(headers)
            EtcdClient._decode(self._where, self.key, status, data)
            raise EtcdError(self._where, self.key, f"HTTP {status}")
        result = await self._next_result()
        if not result.get("created"):
            raise EtcdError(self._where, self.key, f"watch not created: {result}")
        self._take(result)

    async def __aexit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            self._take(await self._next_result())
        return self._pending.pop(0)

    def _take(self, result: dict) -> None:
        if result.get("canceled"):
            reason = result.get("cancel_reason") or "canceled"
            if result.get("compact_revision"):
                reason += f" (history compacted up to revision {result['compact_revision']})"
            raise WatchCanceled(self._where, self.key, reason)
        revision = int(result.get("header", {}).get("revision", 0))
        for ev in result.get("events", []):
            self._pending.append(WatchEvent(ev.get("type", "PUT"), KeyValue.from_json(ev["kv"]), revision))

    async def _next_result(self) -> dict:
        """The next message of the stream: grpc-gateway sends one JSON object per line."""
        if self._conn is None:
            raise EtcdError(self._where, self.key, "watch is closed")
        while True:
            text = self._text.lstrip()
            if text:
                try:
                    obj, end = self._decoder.raw_decode(text)
                except ValueError:
                    obj = None
                if obj is not None:
                    self._text = text[end:]
                    if "error" in obj:
                        err = obj["error"]
                        raise EtcdError(self._where, self.key, str(err.get("message", err)),
                                        code=err.get("grpc_code", err.get("code")))
                    return obj.get("result", {})
            try:
                chunk = await self._conn.read_chunk()
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise EtcdUnavailable(self._where, self.key, f"watch stream broke: {exc}",
                                      code=UNAVAILABLE) from exc
            if not chunk:
                raise EtcdUnavailable(self._where, self.key, "watch stream ended", code=UNAVAILABLE)
            self._text = text + chunk.decode()
