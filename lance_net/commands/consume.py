"""`lance-net consume`: print a topic's records from a position, once or following new ones.

Owns the command line of consuming and how records are printed; the reading itself is
lance_net.client.Consumer.
"""
from __future__ import annotations

import base64
import datetime
import json
import sys

import click

from lance_store.clikit import handle_errors

from lance_net.client import Consumer, LockFileOffsetStore
from lance_net.client.cliopts import client_options, run_command
from lance_net.client.fetched import DEFAULT_FETCH_BYTES

_NS = "ns"


def parse_from(text: str):
    """`earliest`, `latest`, an offset (integer), a time as ISO-8601, or ns since the epoch
    written `<n>ns` or `@<n>`. Returns what Consumer's start_from takes."""
    value = text.strip()
    if value in ("earliest", "latest"):
        return value
    if value.startswith("@") and value[1:].isdigit():
        return ("time", int(value[1:]))
    if value.endswith(_NS) and value[:-len(_NS)].isdigit():
        return ("time", int(value[:-len(_NS)]))
    if value.isdigit():
        return int(value)
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected earliest, latest, an offset, an ISO-8601 time or <n>ns, found {text!r}",
            param_hint="--from") from None
    return when


def _record_json(record) -> str:
    doc = {"offset": record.offset, "timestamp_ns": record.sortkey.timestamp_ns,
           "sortkey": str(record.sortkey), "key_low": record.sortkey.low, "type": record.type}
    try:
        doc["value"] = record.value.decode()
    except UnicodeDecodeError:
        doc["value_base64"] = base64.b64encode(record.value).decode()
    return json.dumps(doc, ensure_ascii=False)


def _record_text(record) -> bytes:
    return bytes(record.value) + b"\n"


async def consume(endpoint, options, topic: str, start_from, *, follow: bool, limit: int | None,
                  as_json: bool, max_bytes: int, group: str | None, offsets_dir: str | None,
                  out) -> int:
    store = LockFileOffsetStore(offsets_dir, group) if group else None
    async with Consumer(endpoint, topic, start_from=start_from, offset_store=store,
                        consumer_name=group or "lance", max_bytes=max_bytes,
                        options=options) as consumer:
        end = None if follow else (await consumer.offsets())[1]
        printed = 0
        while limit is None or printed < limit:
            if end is not None and consumer.position >= end:
                break
            want = None if limit is None else limit - printed
            records = await consumer.poll(max_records=want)
            if as_json:
                out.write("".join(_record_json(r) + "\n" for r in records).encode())
            else:
                out.write(b"".join(_record_text(r) for r in records))
            out.flush()
            printed += len(records)
            if store is not None and records:
                await consumer.commit()
        return printed


@click.command("consume")
@click.argument("topic")
@click.option("--from", "start", default="earliest", show_default=True, metavar="WHERE",
              help="earliest, latest, an OFFSET, or a TIME (ISO-8601, or ns since the epoch "
                   "as <n>ns or @<n>).")
@click.option("--follow", "-F", is_flag=True, help="Keep waiting for new records (Ctrl-C stops).")
@click.option("--limit", "-n", type=click.IntRange(1), default=None, help="Stop after N records.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per record: offset, timestamp_ns, sortkey, type, value "
                   "(or value_base64 when it is not UTF-8).")
@click.option("--max-bytes", type=click.IntRange(1), default=DEFAULT_FETCH_BYTES,
              show_default=True, help="Bytes asked for per fetch.")
@click.option("--group", default=None,
              help="Resume from, and commit to, this consumer's lock-file offset store.")
@click.option("--offsets-dir", type=click.Path(file_okay=False), default=".lance-offsets",
              show_default=True, help="Folder of the lock-file offset store (with --group).")
@client_options
@handle_errors
def command(topic, start, follow, limit, as_json, max_bytes, group, offsets_dir, endpoint,
            options):
    """Print TOPIC's records, one per line (the value as is, or JSON with --json).

    Without --follow it stops at the end the topic had when it started.
    """
    start_from = parse_from(start)
    printed = run_command(consume(endpoint, options, topic, start_from, follow=follow,
                                  limit=limit, as_json=as_json, max_bytes=max_bytes, group=group,
                                  offsets_dir=offsets_dir, out=sys.stdout.buffer))
    if not as_json and sys.stderr.isatty():
        click.echo(f"{printed} record(s)", err=True)
