"""`lance-net produce`: send records to a topic from arguments, a file or standard input.

Owns the command line of producing; the producing itself is lance_net.client.Producer.
"""
from __future__ import annotations

import sys
from typing import IO, Iterable, Iterator

import click

from lance_store.clikit import emit_json, handle_errors
from lance_store.records import JSON, MSGPACK, PROTOBUF, AVRO, RAW

from lance_net.client import BufferFull, Producer
from lance_net.client.cliopts import client_options, run_command

TYPES = {"raw": RAW, "json": JSON, "msgpack": MSGPACK, "protobuf": PROTOBUF, "avro": AVRO}


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        yield line.rstrip(b"\r\n") if line.endswith(b"\n") else line


async def produce(endpoint, options, topic: str, values: Iterable[bytes], *, create: bool,
                  rtype: int, batch_bytes: int, linger_ms: float, want_offsets: bool) -> dict:
    async with Producer(endpoint, topic, create_topic=create, batch_bytes=batch_bytes,
                        linger_ms=linger_ms, options=options) as producer:
        deliveries = []
        for value in values:
            while True:
                try:
                    delivery = producer.send(value, rtype)
                    break
                except BufferFull:
                    await producer.ready()
            if want_offsets:
                deliveries.append(delivery)
        await producer.flush()
        if producer.last_error is not None:
            raise producer.last_error
        results = [await d for d in deliveries]
        report = {"topic": producer.topic_info["name"], "topic_id": producer.topic_id,
                  "records": producer.stats.records_acked,
                  "batches": producer.stats.batches_acked, "producer_id": producer.producer_id}
        if want_offsets:
            report["offsets"] = [r.offset for r in results]
            report["sortkeys"] = [None if r.sortkey is None else [r.sortkey.timestamp_ns, r.sortkey.low]
                                  for r in results]
        return report


@click.command("produce")
@click.argument("topic")
@click.argument("values", nargs=-1)
@click.option("--file", "-f", "path", type=click.File("rb"), default=None,
              help="Read one record per line from this file ('-' for standard input).")
@click.option("--create", is_flag=True, help="Create the topic when it does not exist.")
@click.option("--type", "type_name", type=click.Choice(sorted(TYPES)), default="raw",
              show_default=True, help="Record type of every value.")
@click.option("--batch-bytes", type=click.IntRange(1), default=256 * 1024, show_default=True)
@click.option("--linger-ms", type=click.FloatRange(0), default=2.0, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document with the acked offset and SortKey of every record.")
@client_options
@handle_errors
def command(topic, values, path, create, type_name, batch_bytes, linger_ms, as_json, endpoint,
            options):
    """Send records to TOPIC: the VALUES given, else one per line of --file or standard input.

    Every record is acknowledged durable before the command exits 0.
    """
    if values and path is not None:
        raise click.UsageError("give VALUES or --file, not both")
    if values:
        source: Iterable[bytes] = [v.encode() for v in values]
    else:
        source = _lines(path if path is not None else sys.stdin.buffer)
    report = run_command(produce(endpoint, options, topic, source, create=create,
                                 rtype=TYPES[type_name], batch_bytes=batch_bytes,
                                 linger_ms=linger_ms, want_offsets=as_json))
    if as_json:
        emit_json(report)
        return
    offsets = report.get("offsets") or []
    where = f" (offsets {offsets[0]}..{offsets[-1]})" if offsets else ""
    click.echo(f"produced {report['records']} record(s) to {report['topic']}{where}")
