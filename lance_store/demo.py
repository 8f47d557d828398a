"""The embedded default job: write a small data directory, verify it, summarise.

What `./dev run` shows on a fresh machine before any broker is involved.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from . import open as open_store
from .config import StoreConfig
from .verify import verify_path


def run_demo(path: str, records: int = 200_000) -> dict:
    if os.path.exists(path):
        shutil.rmtree(path)
    cfg = StoreConfig(segment_max_bytes=16 << 20)
    per_batch = 500
    written = batches = 0
    started = time.perf_counter()
    with open_store(path, create=True, node_id=1, config=cfg) as store:
        orders = store.create_topic("orders")
        clicks = store.create_topic("clicks", retention={"max_age_secs": 86400, "max_bytes": 0})
        n = 0
        while n < records:
            k = min(per_batch * 8, records - n)
            group = []
            for start in range(n, n + k, per_batch):
                group.append([json.dumps({"order": i, "amount": i % 977}).encode()
                              for i in range(start, min(start + per_batch, n + k))])
            orders.append_many(group)
            batches += len(group)
            n += k
        clicks.append([b"click-%d" % i for i in range(1000)])
        batches += 1
        written = n + 1000
        size = sum(s.size for t in store.topics() for s in t.segments)
    append_s = time.perf_counter() - started
    started = time.perf_counter()
    report = verify_path(path)
    verify_s = time.perf_counter() - started
    with open_store(path, readonly=True) as store:
        started = time.perf_counter()
        scanned = sum(len(c) for c in store.topic("orders").scan())
        scan_s = time.perf_counter() - started
        first = next(store.topic("orders").records()).value
    return {
        "path": os.path.abspath(path), "records": written, "batches": batches, "bytes": size,
        "append_mb_s": size / append_s / 1e6, "verify_mb_s": report.bytes_checked / verify_s / 1e6,
        "scan_records_s": scanned / scan_s, "clean": not report.damaged,
        "first_value": first.decode(),
        "topics": [{"name": t.name, "segments": len(t.segments), "low": t.low, "high": t.high,
                    "records": t.records} for t in report.topics],
    }
