"""Bad input from one client never stops the broker serving others, and never writes a partial batch."""
import resource
import socket
import struct
import time

import pytest

from lance_net.protocol import Ack, Dialect, Keepalive
from lance_net.protocol.frames import FLAG_INGEST, HEADER_SIZE, encode_frame
from lance_store.records import encode

from .conftest import Broker, metric_value

IDLE_TIMEOUT_S = 2
MAX_PAYLOAD = 1 << 20


@pytest.fixture(scope="module")
def strict_broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("strict"), config={
        "network": {"idle_timeout_s": IDLE_TIMEOUT_S, "max_payload_size": MAX_PAYLOAD}})
    broker.start()
    yield broker
    broker.kill()


def _ingest_frame(topic_id: int, batch_id: int, values) -> bytes:
    payload, count = encode(values)
    return encode_frame(Dialect.CRC32C, FLAG_INGEST, payload, batch_id=batch_id,
                        record_count=count, topic_id=topic_id)


def _still_served(broker, tid: int, batch_id: int) -> None:
    with broker.client() as good:
        assert good.produce(tid, batch_id, [f"good {batch_id}".encode()]) == Ack(batch_id)


def _topic(broker, name: str) -> int:
    with broker.client() as c:
        return c.create_topic(name)["id"]


def _stored(broker, tid: int) -> list:
    with broker.client() as c:
        return [b.records for b in c.fetch_all(tid)]


def test_garbage_bytes_close_only_that_connection(strict_broker):
    tid = _topic(strict_broker, "bad-garbage")
    before = strict_broker.metric("lance_protocol_errors_total", reason="bad_magic")
    with strict_broker.client() as bad:
        bad.send_raw(b"GET / HTTP/1.1\r\nHost: lance\r\n\r\n" + b"\x00" * 64)
        assert bad.closed_by_server()
    _still_served(strict_broker, tid, 1)
    assert strict_broker.metric("lance_protocol_errors_total", reason="bad_magic") == before + 1
    assert _stored(strict_broker, tid) == [[b"good 1"]]


@pytest.mark.parametrize("where", ["payload", "header"])
def test_wrong_checksum_closes_and_writes_nothing(strict_broker, where):
    tid = _topic(strict_broker, f"bad-crc-{where}")
    frame = bytearray(_ingest_frame(tid, 1, [b"corrupted on the way"]))
    if where == "payload":
        frame[-1] ^= 0x01
    else:
        frame[5] ^= 0x40          # a flag bit: the header CRC no longer matches
    reason = f"{where}_checksum"
    before = strict_broker.metric("lance_protocol_errors_total", reason=reason)
    with strict_broker.client() as bad:
        bad.send_raw(_ingest_frame(tid, 0, [b"before the fault"]) + bytes(frame))
        assert bad.recv() == Ack(0)
        assert bad.closed_by_server()
    assert strict_broker.metric("lance_protocol_errors_total", reason=reason) == before + 1
    _still_served(strict_broker, tid, 2)
    assert _stored(strict_broker, tid) == [[b"before the fault"], [b"good 2"]]


def test_frame_cut_mid_payload_is_never_written(strict_broker):
    tid = _topic(strict_broker, "bad-cut")
    frame = _ingest_frame(tid, 1, [b"x" * 5000])
    before = strict_broker.metric("lance_protocol_errors_total", reason="truncated")
    with strict_broker.client() as bad:
        bad.send_raw(frame[:HEADER_SIZE + 1000])
        bad.sock.shutdown(socket.SHUT_WR)
        assert bad.closed_by_server()
    assert strict_broker.metric("lance_protocol_errors_total", reason="truncated") == before + 1
    _still_served(strict_broker, tid, 2)
    assert _stored(strict_broker, tid) == [[b"good 2"]]


def test_huge_length_is_refused_from_the_header_alone(strict_broker):
    tid = _topic(strict_broker, "bad-huge")
    header = bytearray(_ingest_frame(tid, 1, [b"x"])[:HEADER_SIZE])
    struct.pack_into("<I", header, 32, 0xFFFFFFFF)      # payload_length: 4 GiB
    with strict_broker.client() as bad:
        bad.send_raw(bytes(header))                     # no payload follows: it is never awaited
        assert bad.closed_by_server()
    over = bytearray(_ingest_frame(tid, 1, [b"x"])[:HEADER_SIZE])
    struct.pack_into("<I", over, 32, MAX_PAYLOAD + 1)   # just over max_payload_size
    with strict_broker.client() as bad:
        bad.send_raw(bytes(over))
        assert bad.closed_by_server()
    assert strict_broker.metric("lance_protocol_errors_total", reason="payload_too_large") >= 2
    _still_served(strict_broker, tid, 2)
    assert _stored(strict_broker, tid) == [[b"good 2"]]


def test_slowloris_is_closed_after_the_idle_timeout(strict_broker):
    tid = _topic(strict_broker, "bad-slow")
    frame = _ingest_frame(tid, 1, [b"dribbled"])
    with strict_broker.client() as slow:
        slow.sock.setblocking(False)
        closed = False
        deadline = time.monotonic() + 6 * IDLE_TIMEOUT_S
        sent = 0
        # One byte at a time, never a whole frame: bytes alone do not count as activity.
        while not closed and time.monotonic() < deadline and sent < len(frame) - 1:
            try:
                slow.sock.send(frame[sent:sent + 1])
                sent += 1
                closed = slow.sock.recv(1) == b""
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            _still_served(strict_broker, tid, 1000 + sent)
            time.sleep(0.25)
        assert closed, f"still open after {sent} bytes"
    assert len(_stored(strict_broker, tid)) == sent   # only the good client's batches


def test_thousands_of_idle_connections(strict_broker):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    tid = _topic(strict_broker, "bad-crowd")
    idle = []
    try:
        for _ in range(2000):
            idle.append(socket.create_connection(strict_broker.address, timeout=10))
        with strict_broker.client() as good:
            for i in range(20):
                assert good.produce(tid, i, [b"served"]) == Ack(i)
                assert good.request(Keepalive()) == Keepalive()
            seen = metric_value(strict_broker.metrics(), "lance_connections")
        assert seen >= 2000
        # The idle ones are closed by the idle timeout; the good client was never refused.
        for sock in idle[:50]:
            sock.settimeout(6 * IDLE_TIMEOUT_S)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    assert len(_stored(strict_broker, tid)) == 20


def test_ten_thousand_idle_connections_do_not_stop_a_good_client(broker):
    """Ten thousand clients connect and say nothing (within the default idle timeout): the
    broker holds them all and still serves a producer at once."""
    want = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= want + 200, f"this machine allows {hard} descriptors; the test needs {want + 200}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tid = _topic(broker, "crowd")
    idle = []
    try:
        for _ in range(want):
            idle.append(socket.create_connection(broker.address, timeout=30))
        with broker.client() as good:
            for i in range(20):
                assert good.produce(tid, i, [b"served"]) == Ack(i)
            seen = metric_value(broker.metrics(), "lance_connections")
        assert seen >= want
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(_stored(broker, tid)) == 20
