"""`lance-net bench`: measure a broker as upstream `lnc-bench` does: produce flat out, durable acks.

Owns the load shape (C connections, P frames in flight each, one prebuilt batch sent again and
again) and the report: ack latency percentiles, throughput, errors, optionally the consuming
rate and the broker's peak RSS. The last line printed is one JSON document.
"""
from __future__ import annotations

import asyncio
import collections
import json
import time

import click
import numpy as np

from lance_store.clikit import handle_errors
from lance_store.records import encode_uniform

from lance_net.client import Admin, ClientError, Consumer, Producer
from lance_net.client.cliopts import client_options, run_command
from lance_net.client.fetched import DEFAULT_FETCH_BYTES
from lance_net.protocol import ListOffsets

MB = 1_000_000


async def _connection(endpoint, options, topic_id: int, payload: bytes, count: int,
                      pipeline: int, deadline: float) -> tuple:
    """One producer connection keeping `pipeline` batches in flight until the deadline."""
    errors = 0
    async with Producer(endpoint, topic_id, max_in_flight=pipeline, track_latency=True,
                        linger_ms=0, options=options) as producer:
        pending = collections.deque()
        while time.perf_counter() < deadline:
            pending.append(producer.send_payload(payload, count))
            if len(pending) >= pipeline:
                try:
                    await pending.popleft().acked()
                except ClientError:
                    errors += 1
        for delivery in pending:
            try:
                await delivery.acked()
            except ClientError:
                errors += 1
        return producer.stats, errors


async def _consume(endpoint, options, topic_id: int, start: int, end: int,
                   max_bytes: int) -> tuple[int, int, float]:
    async with Consumer(endpoint, topic_id, start_from=start, max_bytes=max_bytes,
                        max_wait_ms=100, options=options) as consumer:
        records = 0
        nbytes = 0
        began = time.perf_counter()
        while consumer.position < end:
            batch = await consumer.poll_batch()
            records += len(batch)
            nbytes += batch.nbytes
        return records, nbytes, time.perf_counter() - began


def broker_memory(pid: int) -> dict:
    """VmHWM (peak RSS) and VmRSS of a process, in MB, from /proc/<pid>/status."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0]) * 1024 / MB  # the file counts kB
    return {"broker_peak_rss_mb": round(found.get("VmHWM", 0.0), 1),
            "broker_rss_mb": round(found.get("VmRSS", 0.0), 1)}


async def bench(endpoint, options, *, topic: str, msg_size: int, duration: float,
                connections: int, pipeline: int, batch_bytes: int, consume: bool,
                fetch_bytes: int, echo) -> dict:
    per_batch = max(1, batch_bytes // (msg_size + 5))
    payload, count = encode_uniform([b"\xab" * msg_size] * per_batch)
    async with Admin(endpoint, options) as admin:
        info = await admin.create_topic(topic)
        topic_id = int(info["id"])
        start = (await admin.list_offsets(topic_id, ListOffsets.LATEST)).offset
        endpoint = admin.session.endpoint
    echo(f"bench: topic {topic} (id {topic_id}), {connections} connection(s) x {pipeline} in "
         f"flight, {count} x {msg_size} B per batch, {duration} s")
    began = time.perf_counter()
    deadline = began + duration
    results = await asyncio.gather(*[
        _connection(endpoint, options, topic_id, payload, count, pipeline, deadline)
        for _ in range(connections)])
    elapsed = time.perf_counter() - began
    latencies = np.concatenate([np.frombuffer(stats.latencies_s, np.float64)
                                for stats, _ in results]) * 1000.0
    messages = sum(stats.records_acked for stats, _ in results)
    errors = sum(e for _, e in results)
    report = {
        "topic": topic, "msg_size": msg_size, "connections": connections,
        "pipeline": pipeline, "batch_records": count, "duration_s": round(elapsed, 3),
        "messages": messages, "errors": errors,
        "msgs_per_s": round(messages / elapsed, 1),
        "mb_per_s": round(messages * msg_size / elapsed / MB, 2),
        "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
        "p999_ms": _percentile(latencies, 99.9),
        "backpressure_events": sum(stats.backpressure for stats, _ in results),
    }
    echo(f"produce: {report['msgs_per_s']:.0f} msg/s, {report['mb_per_s']} MB/s, ack p50 "
         f"{report['p50_ms']} ms, p99 {report['p99_ms']} ms, p999 {report['p999_ms']} ms, "
         f"{errors} error(s)")
    if consume:
        async with Admin(endpoint, options) as admin:
            end = (await admin.list_offsets(topic_id, ListOffsets.LATEST)).offset
        records, nbytes, seconds = await _consume(endpoint, options, topic_id, start, end,
                                                  fetch_bytes)
        report["consume_messages"] = records
        report["consume_msgs_per_s"] = round(records / seconds, 1) if seconds else 0.0
        report["consume_mb_per_s"] = round(nbytes / seconds / MB, 2) if seconds else 0.0
        echo(f"consume: {report['consume_msgs_per_s']:.0f} msg/s, "
             f"{report['consume_mb_per_s']} MB/s")
    return report


def _percentile(values: np.ndarray, q: float) -> float | None:
    if not len(values):
        return None
    return round(float(np.percentile(values, q)), 3)


@click.command("bench")
@click.option("--topic-name", default="bench", show_default=True, help="Topic to produce to "
              "(created when missing).")
@click.option("--msg-size", type=click.IntRange(1, 16 * 1024 * 1024), default=1024,
              show_default=True, help="Bytes per message.")
@click.option("--duration", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds of producing.")
@click.option("--connections", type=click.IntRange(1), default=1, show_default=True)
@click.option("--pipeline", type=click.IntRange(1), default=4, show_default=True,
              help="Frames in flight per connection (each frame waits behind the others: "
                   "ack latency grows with it once the disk is the limit).")
@click.option("--batch-bytes", type=click.IntRange(1), default=256 * 1024, show_default=True,
              help="Bytes of records per Ingest frame.")
@click.option("--consume", is_flag=True,
              help="Then consume the produced records from their start and report msg/s.")
@click.option("--fetch-bytes", type=click.IntRange(1), default=DEFAULT_FETCH_BYTES,
              show_default=True, help="Bytes asked for per fetch with --consume.")
@click.option("--broker-pid", type=click.IntRange(1), default=None,
              help="Report this process's peak RSS (VmHWM) at the end.")
@client_options
@handle_errors
def command(topic_name, msg_size, duration, connections, pipeline, batch_bytes, consume,
            fetch_bytes, broker_pid, endpoint, options):
    """Produce at full speed with durable acks and report throughput and ack latency.

    The last line is one JSON document: msgs_per_s, mb_per_s (10^6 bytes of message values
    per second), p50_ms/p99_ms/p999_ms (ack latency of a batch), errors, messages, and with
    --consume consume_msgs_per_s, with --broker-pid broker_peak_rss_mb.
    """
    report = run_command(bench(endpoint, options, topic=topic_name, msg_size=msg_size,
                               duration=duration, connections=connections, pipeline=pipeline,
                               batch_bytes=batch_bytes, consume=consume,
                               fetch_bytes=fetch_bytes, echo=click.echo))
    if broker_pid is not None:
        report.update(broker_memory(broker_pid))
    click.echo(json.dumps(report))
