"""`lance-store`: inspect, verify, dump, repair and reindex a data directory.

Each command is a thin layer over the library (verify, recovery, store); read
commands take `--json`. Exit codes: 0 clean, 1 damage or failure, 2 usage.
"""
from __future__ import annotations

import os
import sys
import time

import click

from . import clikit
from .clikit import emit_json, handle_errors, human_bytes, human_ns, table
from .segment import naming
from .segment.header import BATCH_OVERHEAD, BatchHeader
from .segment.reader import scan_segment
from .verify import verify_path

EPILOG = "Exit codes: 0 success, 1 damage found or the command failed, 2 usage error."


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lance")
def main() -> None:
    """LANCE storage engine tools.

    A data directory holds node.json and segments/<topic>/ folders of segment
    files (.lnc) and sparse indexes (.idx). These commands read it safely next
    to a running broker (verify, inspect, dump) or fix it while no broker runs
    (repair, reindex).

    \b
    Examples:
      lance-store verify /var/lib/lance
      lance-store inspect /var/lib/lance --json
      lance-store dump /var/lib/lance/segments/orders/00000000000000000000_17069.lnc --limit 5
      lance-store repair /var/lib/lance --dry-run
    """


@main.command(epilog=EPILOG)
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@handle_errors
def verify(path: str, as_json: bool) -> None:
    """Check every batch's CRCs, offsets, indexes and metadata under PATH.

    PATH is a data directory, a topic folder or one segment file. Opens
    nothing for writing; safe next to a running broker (an active segment is
    read up to its last complete batch).
    """
    total = 0 if as_json else _total(path)
    started = time.perf_counter()
    with clikit.progress_bar(total, "verifying", enabled=not as_json) as advance:
        report = verify_path(path, progress=advance)
    elapsed = time.perf_counter() - started
    if as_json:
        doc = report.as_dict()
        doc["seconds"] = round(elapsed, 3)
        emit_json(doc)
    else:
        rows = [[t.name, len(t.segments), t.low, t.high, t.records, human_bytes(t.bytes)]
                for t in report.topics]
        table(f"verify {report.path}", ["topic", "segments", "low", "high", "records", "bytes"], rows)
        for f in report.findings:
            color = {"damage": "red", "warning": "yellow"}.get(f.severity, "cyan")
            clikit.console.print(f"[{color}]{f}[/]", highlight=False)
        rate = report.bytes_checked / elapsed / 1e6 if elapsed > 0 else 0
        verdict = "[red]DAMAGED[/]" if report.damaged else "[green]clean[/]"
        clikit.console.print(f"{verdict}: {human_bytes(report.bytes_checked)} checked in "
                             f"{elapsed:.2f} s ({rate:.0f} MB/s)", highlight=False)
    sys.exit(1 if report.damaged else 0)


def _total(path: str) -> int:
    from .verify import total_bytes
    return total_bytes(path)


@main.command(epilog=EPILOG)
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def inspect(path: str, as_json: bool) -> None:
    """Topics, segments, offsets, sizes and time ranges of a data directory."""
    from . import open as open_store
    with open_store(path, readonly=True) as store:
        doc = {"path": store.path, "node_id": store.node_id, "cluster_id": store.cluster_id,
               "legacy": store.legacy, "warnings": store.warnings, "topics": []}
        for t in store.topics():
            segs = []
            for s in t.segments:
                first = last = None
                if s.size and not t.legacy:
                    scan = scan_segment(s.path, s.name.base, length=s.size)
                    if len(scan.batches):
                        first, last = int(scan.batches.first_ts[0]), int(scan.batches.last_ts[-1])
                segs.append({"file": os.path.basename(s.path), "sealed": s.sealed, "base": s.name.base,
                             "end": s.end, "bytes": s.size, "first_ts": first, "last_ts": last})
            doc["topics"].append({**t.info(), "low": t.low_watermark, "high": t.high_watermark,
                                  "legacy": t.legacy, "segments": segs})
    if as_json:
        emit_json(doc)
        return
    clikit.console.print(f"data directory {doc['path']}  node {doc['node_id']}  "
                         f"cluster {doc['cluster_id'] or '-'}" + ("  (upstream layout)" if doc["legacy"] else ""),
                         highlight=False)
    for t in doc["topics"]:
        rows = [[s["file"], "sealed" if s["sealed"] else "active", s["base"], s["end"],
                 human_bytes(s["bytes"]), human_ns(s["first_ts"]), human_ns(s["last_ts"])]
                for s in t["segments"]]
        ret = t["retention"]
        table(f"topic {t['name']} (id {t['id']}) offsets [{t['low']}, {t['high']}) retention "
              f"age={ret['max_age_secs']}s bytes={ret['max_bytes']}",
              ["segment", "state", "base", "end", "size", "first record", "last record"], rows)
    for w in doc["warnings"]:
        clikit.console.print(f"[yellow]warning:[/] {w}", highlight=False)


@main.command(epilog=EPILOG)
@click.argument("segment", type=click.Path(dir_okay=False))
@click.option("--limit", type=int, default=20, show_default=True, help="Batches to show (0: all).")
@click.option("--hex", "show_hex", is_flag=True, help="Show record values as hex.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per batch, one per line.")
@handle_errors
def dump(segment: str, limit: int, show_hex: bool, as_json: bool) -> None:
    """Print the batches and records of one segment file."""
    from . import scanner
    name = naming.parse(os.path.basename(segment))
    if name is None:
        raise click.UsageError(f"{segment}: not a segment file name (<base>_<t0>[-<t1>].lnc)")
    with open(segment, "rb") as f:
        data = f.read()
    if name.legacy:
        recs = scanner.scan_legacy(data)
        for i in range(len(recs) if limit == 0 else min(limit, len(recs))):
            _print_record(recs, data, i, show_hex, as_json)
        return
    scan = scan_segment(segment, name.base)
    recs = scanner.scan_records(data, scan.batches)
    shown = len(scan.batches) if limit == 0 else min(limit, len(scan.batches))
    for i in range(shown):
        hdr = BatchHeader.unpack(data, int(scan.batches.pos[i]))
        if as_json:
            emit_json({"batch": i, "offset": hdr.base_offset, "records": hdr.record_count,
                       "payload_length": hdr.payload_length, "first_ts": hdr.first_timestamp_ns,
                       "first_key_low": hdr.first_key_low, "producer_id": hdr.producer_id,
                       "producer_seq": hdr.producer_seq, "payload_crc": f"0x{hdr.payload_crc:08X}"})
        else:
            clikit.console.print(
                f"[bold]batch {i}[/] offset {hdr.base_offset} size {BATCH_OVERHEAD + hdr.payload_length} "
                f"records {hdr.record_count} ts {hdr.first_timestamp_ns} ({human_ns(hdr.first_timestamp_ns)}) "
                f"key_low {hdr.first_key_low} producer {hdr.producer_id}/{hdr.producer_seq} "
                f"crc 0x{hdr.payload_crc:08X}", highlight=False)
            for j in (recs.batch == i).nonzero()[0].tolist():
                _print_record(recs, data, j, show_hex, False)
    if scan.error is not None and not as_json:
        clikit.console.print(f"[yellow]stops at byte {scan.valid_end}: {scan.error}[/]", highlight=False)


def _print_record(recs, data: bytes, i: int, show_hex: bool, as_json: bool) -> None:
    p, n = int(recs.value_pos[i]), int(recs.length[i])
    value = data[p:p + n]
    shown = value[:64].hex() if show_hex else repr(value[:64])[2:-1]
    more = "..." if n > 64 else ""
    if as_json:
        emit_json({"offset": int(recs.offset[i]), "type": int(recs.type[i]), "length": n,
                   "value_hex": value.hex()})
    else:
        click.echo(f"  @{int(recs.offset[i])} type 0x{int(recs.type[i]):02X} len {n}: {shown}{more}")


@main.command(epilog=EPILOG)
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and result as JSON.")
@handle_errors
def repair(path: str, dry_run: bool, as_json: bool) -> None:
    """Cut torn tails of active segments and rebuild missing or wrong indexes.

    Never deletes a valid batch: a damaged sealed segment is reported, not
    touched (restore it from a DR copy with lance-dr). Needs the directory's
    write lock, so stop the broker first.
    """
    from .repair import plan_repair, run_repair
    plan = plan_repair(path)
    done = [] if dry_run else run_repair(path, plan)
    if as_json:
        emit_json({"path": path, "dry_run": dry_run, "plan": [a.as_dict() for a in plan],
                   "done": [a.as_dict() for a in done]})
    else:
        if not plan:
            clikit.console.print("nothing to repair", highlight=False)
        for a in plan:
            mark = "would" if dry_run else ("done:" if a in done else "skipped:")
            clikit.console.print(f"{mark} {a}", highlight=False)
    sys.exit(1 if any(a.kind == "unrepairable" for a in plan) else 0)


@main.command(epilog=EPILOG)
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def reindex(path: str, as_json: bool) -> None:
    """Rebuild the sparse index (.idx) of every sealed segment under PATH."""
    from .repair import reindex_path
    rebuilt = reindex_path(path)
    if as_json:
        emit_json({"rebuilt": rebuilt})
    else:
        for p, n in rebuilt:
            click.echo(f"{p}: {n} entries")
        click.echo(f"{len(rebuilt)} index files rebuilt")


@main.command(epilog=EPILOG)
@click.argument("path", type=click.Path(), default="./demo-data")
@click.option("--records", type=int, default=200_000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def demo(path: str, records: int, as_json: bool) -> None:
    """Write a demo data directory, verify it and print a summary."""
    from .demo import run_demo
    doc = run_demo(path, records)
    if as_json:
        emit_json(doc)
        return
    clikit.console.print(f"wrote {doc['records']:,} records in {doc['batches']:,} batches to "
                         f"{doc['path']} ({human_bytes(doc['bytes'])}, {doc['append_mb_s']:.0f} MB/s durable)",
                         highlight=False)
    rows = [[t["name"], t["segments"], t["low"], t["high"], t["records"]] for t in doc["topics"]]
    table("topics", ["topic", "segments", "low", "high", "records"], rows)
    clikit.console.print(f"verify: {'clean' if doc['clean'] else 'DAMAGED'} "
                         f"({doc['verify_mb_s']:.0f} MB/s); scan: {doc['scan_records_s']:,.0f} records/s; "
                         f"first record: {doc['first_value']!r}", highlight=False)
    clikit.console.print(f"next: lance-store inspect {doc['path']}", highlight=False)


@main.command(epilog=EPILOG, context_settings={"ignore_unknown_options": False})
@click.option("--dir", "bench_dir", type=click.Path(), default="bench/out", show_default=True,
              help="Where to write (on the disk to measure).")
@click.option("--gib", type=float, default=2.0, show_default=True, help="GiB appended per run.")
@click.option("--scan-gib", type=float, default=4.0, show_default=True,
              help="Size of the topic verified and scanned for throughput and peak RSS.")
@click.option("--backend", type=click.Choice(["auto", "uring", "pwritev", "all"]), default="all",
              show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True,
              help="Runs of each measurement: appends and latency each between two dd "
                   "runs, 64 writers each after a one-writer run; the median ratio is "
                   "reported (this kind of disk drifts from minute to minute).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def bench(bench_dir: str, gib: float, scan_gib: float, backend: str, repeats: int,
          as_json: bool) -> None:
    """Measure append, verify and scan throughput against the disk's raw speed.

    \b
    Appends: append_many (8 x 256 KiB per call, one sync), append, append_async,
    one-record latency and 64 concurrent asyncio writers, per backend; then
    verify (cold and warm) and scan of a --scan-gib topic. Run it with nothing
    else on the disk; `--gib 0.25 --scan-gib 0.3 --repeats 1` is a quick run."""
    from .bench import run_bench
    run_bench(bench_dir, gib=gib, scan_gib=scan_gib, backend=backend, as_json=as_json,
              repeats=repeats)


if __name__ == "__main__":  # pragma: no cover
    main()
