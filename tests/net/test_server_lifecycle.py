"""The broker's life: startup and health, metrics, drain on SIGTERM, crashes, restarts, retention."""
import json
import signal
import subprocess
import threading
import time
import tomllib

import pytest

import lance_store
from lance_net.protocol import (
    FETCH_TAIL, Ack, Backpressure, CommitAck, CommitOffset, CreateTopicWithRetention,
    ErrorResponse, Fetch, FetchResponse, Ingest, InitProducer, Keepalive, ListOffsets,
    ProducerResponse, Subscribe, SubscribeAck,
)
from lance_store.records import encode
from lance_store.settings import DEFAULTS

from .conftest import RawClient, lance_net_command, metric_value


def test_print_config_prints_the_defaults():
    out = subprocess.run([*lance_net_command(), "serve", "--print-config"], check=True,
                         capture_output=True, text=True).stdout
    printed = tomllib.loads(out)
    assert printed["network"] == DEFAULTS["network"]
    assert printed["network"]["listen"] == "127.0.0.1:1992"
    assert printed["node"]["data_dir"] == "./lance-data"
    assert printed["retention"] == DEFAULTS["retention"]


@pytest.mark.parametrize("args, toml, message", [
    (["--listen", "127.0.0.1:99999"], "", "network.listen: expected a port in 0..65535"),
    ([], '[replication]\nmode = "l2"\n', "replication.mode: expected 'l1' (standalone) or 'l3'"),
    ([], '[replication]\nmode = "l3"\n', "replication.members: expected this node's id 1"),
    ([], "[network]\nidle_timeout_s = 0\n", "network.idle_timeout_s: expected a positive"),
    ([], '[tls]\ncert = "server.pem"\n', "tls: cert and key go together"),
    ([], "[network]\nlisten_port = 1\n", "unknown setting [network] listen_port"),
    ([], "[io]\nbuffer_size = 5000\n", "io: buffer_size 5000: a multiple of 4096"),
], ids=["port", "mode", "members", "timeout", "tls", "unknown-key", "buffer-size"])
def test_bad_settings_stop_startup_with_exit_2(tmp_path, args, toml, message):
    config = tmp_path / "lance.toml"
    config.write_text(toml)
    done = subprocess.run([*lance_net_command(), "serve", "--data-dir", str(tmp_path / "data"),
                           "--config", str(config), "--http", "off", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "data").exists()


def test_startup_logs_backend_data_dir_and_recovery(broker_factory, tmp_path):
    broker = broker_factory(data_dir=tmp_path / "fresh" / "lance-data")
    assert (tmp_path / "fresh" / "lance-data" / "node.json").exists()
    log = broker.log()
    assert "io backend:" in log
    assert f"data directory: {broker.data_dir}" in log
    assert "recovery: 0 topic(s), 0 warning(s)" in log


def test_recovery_findings_are_logged_and_acked_data_kept(broker):
    with broker.client() as c:
        tid = c.create_topic("torn")["id"]
        for i in range(3):
            assert c.produce(tid, i, [f"kept {i}".encode()]) == Ack(i)
    broker.kill()
    (active,) = [p for p in (broker.data_dir / "segments" / "torn").glob("*.lnc")
                 if "-" not in p.stem]                       # the active segment
    with open(active, "ab") as f:
        f.write(b"\xfe\x48\x00\x00\x00LNCB" + b"\x07" * 40)   # a torn batch header
    broker.start()
    assert "WARNING lance_net.server: recovery:" in broker.log()
    assert "recovery: 1 topic(s), 1 warning(s)" in broker.log()
    with broker.client() as c:
        assert [b.records for b in c.fetch_all(tid)] == [[b"kept 0"], [b"kept 1"], [b"kept 2"]]
    assert json.loads(broker.http_get("/health/ready")[1])["recovery_warnings"] == 1


def test_connections_over_the_limit_are_closed(broker_factory):
    broker = broker_factory({"network": {"max_connections": 3}})
    kept = [broker.client() for _ in range(3)]
    try:
        for c in kept:
            assert c.request(Keepalive()) == Keepalive()
        with broker.client() as extra:
            assert extra.closed_by_server()
        assert broker.metric("lance_connections_refused_total") == 1
    finally:
        for c in kept:
            c.close()
    deadline = time.monotonic() + 10
    while broker.metric("lance_connections") and time.monotonic() < deadline:
        time.sleep(0.05)
    with broker.client() as again:
        assert again.request(Keepalive()) == Keepalive()


def test_a_second_broker_on_the_same_data_dir_refuses(broker, broker_factory):
    second = broker_factory(name="second", data_dir=broker.data_dir, start=False)
    with pytest.raises(Exception, match="exited with 1"):
        second.start()
    assert "open for writing by another process" in second.log()
    with broker.client() as c:
        assert c.create_topic("still-here")["id"] == 1


def test_health_endpoints_and_metrics(broker):
    for path in ("/health/live", "/health/startup", "/health/ready"):
        status, body = broker.http_get(path)
        assert status == 200, (path, body)
    assert json.loads(broker.http_get("/health/ready")[1])["status"] == "ready"
    assert broker.http_get("/nowhere")[0] == 404
    with broker.client() as c:
        tid = c.create_topic("metered")["id"]
        for i in range(5):
            c.ingest(tid, i, [b"m" * 100, b"n" * 100])
        assert [c.recv() for _ in range(5)] == [Ack(i) for i in range(5)]
        high = c.fetch(tid, FETCH_TAIL).next_offset
        fetched = c.fetch(tid, 0)
        assert fetched.record_count == 10
        assert c.request(CommitOffset(tid, 7, 0)) == CommitAck(7, 0)
        text = broker.metrics()
        assert metric_value(text, "lance_connections") == 1
    assert metric_value(text, "lance_ingest_batches_total", topic="metered") == 5
    assert metric_value(text, "lance_ingest_records_total", topic="metered") == 10
    assert metric_value(text, "lance_ingest_bytes_total", topic="metered") == 5 * 210
    assert metric_value(text, "lance_fetch_records_total", topic="metered") == 10
    assert metric_value(text, "lance_fetch_bytes_total", topic="metered") == high
    assert metric_value(text, "lance_topic_high_watermark", topic="metered") == high
    assert metric_value(text, "lance_consumer_committed_offset", topic="metered", consumer="7") == 0
    assert metric_value(text, "lance_consumer_lag_bytes", topic="metered", consumer="7") == high
    assert metric_value(text, "lance_batch_latency_seconds_count") == 5
    assert metric_value(text, "lance_ack_latency_seconds_count") == 5
    assert metric_value(text, "lance_group_write_seconds_count") >= 1
    assert metric_value(text, "lance_ready") == 1
    for name in ("lance_backpressure_events_total", "lance_protocol_errors_total",
                 "lance_connections_accepted_total"):
        assert name in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_drain_acks_every_received_batch(broker, sig):
    with broker.client() as c:
        tid = c.create_topic("drained")["id"]
        values = [b"d" * 1000] * 20
        c.sock.sendall(b"".join(_frames(c, tid, range(300), values)))
        broker.signal(sig)
        acked = []
        while True:
            reply = c.recv(timeout=30)
            if not isinstance(reply, Ack):
                break
            acked.append(reply.batch_id)
    assert broker.wait(30) == 0
    assert "drained in" in broker.log()
    assert acked == list(range(len(acked)))          # in order, none refused
    with lance_store.open(broker.data_dir, readonly=True) as store:
        stored = list(store.topic("drained").scan())
        records = sum(len(chunk) for chunk in stored)
    assert records >= len(acked) * len(values)
    assert records % len(values) == 0                 # whole batches only


def _frames(client, tid, batch_ids, values):
    payload, count = encode(values)
    return [client.lwp.send(Ingest(tid, i, count, payload)) for i in batch_ids]


def test_a_second_signal_stops_at_once(broker_factory):
    broker = broker_factory({"network": {"drain_timeout_s": 120}})
    with broker.client() as c:
        tid = c.create_topic("stuck")["id"]
        assert c.produce(tid, 1, [b"s" * 60_000] * 16) == Ack(1)
    # A reader that never reads: its replies fill the socket, so the drain cannot finish.
    stuck = broker.client()
    stuck.sock.sendall(b"".join(stuck.lwp.send(Fetch(tid, 0, 1 << 20)) for _ in range(200)))
    time.sleep(0.5)
    broker.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert broker.running                               # still draining
    broker.signal(signal.SIGTERM)
    assert broker.wait(20) == 1
    assert "stopping before every received batch was acknowledged: a second signal" in broker.log()
    stuck.close()
    with lance_store.open(broker.data_dir, readonly=True) as store:
        assert [len(chunk) for chunk in store.topic("stuck").scan()] == [16]


def test_drain_timeout_ends_a_stuck_drain(broker_factory):
    broker = broker_factory({"network": {"drain_timeout_s": 1}})
    with broker.client() as c:
        tid = c.create_topic("slow-reader")["id"]
        assert c.produce(tid, 1, [b"s" * 60_000] * 16) == Ack(1)
    stuck = broker.client()
    stuck.sock.sendall(b"".join(stuck.lwp.send(Fetch(tid, 0, 1 << 20)) for _ in range(200)))
    time.sleep(0.5)
    assert broker.stop(timeout=20) == 1
    assert "drain_timeout_s (1 s) passed" in broker.log()
    stuck.close()


def test_sigkill_while_producing_keeps_every_acked_batch_once_in_order(broker):
    with broker.client() as c:
        tid = c.create_topic("crash")["id"]
    producers = 3
    per_batch = 10
    acked: dict[int, list[int]] = {p: [] for p in range(producers)}
    stop = threading.Event()

    def produce(p: int) -> None:
        try:
            with broker.client(timeout=5) as client:
                seq = 0
                window = 0
                while not stop.is_set():
                    while window < 16:
                        payload, count = encode([f"p{p}-s{seq}-r{r}".encode()
                                                 for r in range(per_batch)])
                        client.send(Ingest(tid, seq, count, payload))
                        seq += 1
                        window += 1
                    reply = client.recv()
                    if not isinstance(reply, Ack):
                        return
                    acked[p].append(reply.batch_id)
                    window -= 1
        except OSError:
            return  # the broker died under us: what was acked is what counts

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while min(len(a) for a in acked.values()) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    broker.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert all(len(a) >= 50 for a in acked.values()), {p: len(a) for p, a in acked.items()}

    broker.start()
    with broker.client() as c:
        stored = c.fetch_all(tid)
    seen: dict[int, list[int]] = {p: [] for p in range(producers)}
    for batch in stored:
        assert len(batch.records) == per_batch          # never a partial batch
        p, s = (int(x[1:]) for x in batch.records[0].decode().split("-")[:2])
        assert batch.records == [f"p{p}-s{s}-r{r}".encode() for r in range(per_batch)]
        seen[p].append(s)
    for p in range(producers):
        assert seen[p] == sorted(set(seen[p]))          # in order, exactly once
        assert seen[p][:len(acked[p])] == acked[p]      # every acked batch, in its place
        assert seen[p] == list(range(len(seen[p])))     # nothing after a gap


def test_idempotent_producer_dedup_across_a_crash(broker):
    with broker.client() as c:
        tid = c.create_topic("dedup")["id"]
        pid = c.request(InitProducer(0, tid)).producer_id
        for seq in range(1, 6):
            c.ingest(tid, seq, [f"seq {seq}".encode()])
        assert [c.recv() for _ in range(5)] == [Ack(s) for s in range(1, 6)]
    broker.restart(kill=True)
    with broker.client() as c:
        assert c.request(InitProducer(pid, tid)) == ProducerResponse(pid, 5)
        assert c.produce(tid, 5, [b"seq 5, resent"]) == Ack(5)
        assert c.produce(tid, 7, [b"seq 7"]).error_code == "OUT_OF_ORDER_SEQUENCE"
        assert c.produce(tid, 6, [b"seq 6"]) == Ack(6)
        stored = c.fetch_all(tid)
        assert [b.records[0] for b in stored] == [f"seq {s}".encode() for s in range(1, 7)]
        assert c.request(InitProducer(0, tid)).producer_id > pid     # ids are never reused


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_committed_offsets_survive_a_restart(broker, kill):
    with broker.client() as c:
        tid = c.create_topic("resume")["id"]
        for i in range(3):
            assert c.produce(tid, i, [b"r"]) == Ack(i)
        offsets = [b.offset for b in c.fetch_all(tid)]
        assert c.request(CommitOffset(tid, 11, offsets[1])) == CommitAck(11, offsets[1])
        assert c.request(CommitOffset(tid, 12, offsets[2])) == CommitAck(12, offsets[2])
        assert c.request(CommitOffset(tid, 11, offsets[2])) == CommitAck(11, offsets[2])
    broker.restart(kill=kill)
    with broker.client() as c:
        assert c.request(Subscribe(tid, FETCH_TAIL, 1 << 16, 11)) == SubscribeAck(11, offsets[2])
        assert c.request(Subscribe(tid, FETCH_TAIL, 1 << 16, 12)) == SubscribeAck(12, offsets[2])
        assert c.request(Subscribe(tid, FETCH_TAIL, 1 << 16, 13)) == SubscribeAck(13, 0)
    document = json.loads((broker.data_dir / "offsets" / "resume.json").read_text())
    assert document["consumers"] == {"11": offsets[2], "12": offsets[2]}


def test_retention_runs_in_the_background(broker_factory):
    broker = broker_factory({"retention": {"check_interval_s": 1},
                             "io": {"segment_max_bytes": 8192}})
    with broker.client() as c:
        tid = c.request(CreateTopicWithRetention("short-lived", 0, 16384)).data["id"]
        for i in range(40):
            c.ingest(tid, i, [bytes([i]) * 1000])
        assert [c.recv() for _ in range(40)] == [Ack(i) for i in range(40)]
        deadline = time.monotonic() + 20
        low = 0
        while low == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            low = c.request(ListOffsets(tid, ListOffsets.EARLIEST)).low
        assert low > 0
        gone = c.fetch(tid, 0)
        assert isinstance(gone, ErrorResponse) and gone.error_code == "OFFSET_OUT_OF_RANGE"
        assert gone.message.startswith(f"OFFSET_OUT_OF_RANGE: low={low} high=")
        kept = c.fetch_all(tid, low)
        assert kept and kept[-1].records == [bytes([39]) * 1000]
    assert broker.metric("lance_retention_segments_deleted_total", topic="short-lived") >= 1


def test_backpressure_is_sent_when_a_queue_passes_its_high_mark(broker_factory):
    broker = broker_factory({"network": {"backpressure_bytes": 1}})
    with broker.client() as c:
        tid = c.create_topic("pressed")["id"]
        c.sock.sendall(b"".join(_frames(c, tid, range(200), [b"p" * 500])))
        acks, signals = [], 0
        while len(acks) < 200:
            reply = c.recv(timeout=30)
            if isinstance(reply, Backpressure):
                signals += 1
            else:
                acks.append(reply)
        assert acks == [Ack(i) for i in range(200)]
        assert signals >= 1
    assert broker.metric("lance_backpressure_events_total") == signals


def test_long_poll_is_answered_when_the_node_drains(broker):
    with broker.client() as c:
        tid = c.create_topic("parked")["id"]
        c.send(Fetch(tid, 0, 1 << 20, max_wait_ms=600_000))
        time.sleep(0.3)
        broker.signal(signal.SIGTERM)
        reply = c.recv(timeout=30)
        assert isinstance(reply, FetchResponse) and len(reply.data) == 0
    assert broker.wait(30) == 0


def test_raw_client_fixture_contract(broker):
    host, port, http_port, data_dir = broker
    assert (host, port) == broker.address and http_port == broker.http_port
    assert data_dir.is_dir()
    with RawClient(host, port) as c:
        assert c.create_topic("contract")["name"] == "contract"
