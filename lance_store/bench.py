"""`lance-store bench`: append, verify and scan throughput next to the disk's own limits.

The raw limits (dd with O_DIRECT, 1 MiB blocks; dd O_DIRECT+O_DSYNC 4 KiB writes)
are measured in the same run, on the same folder, so ratios compare like with like.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

from . import open as open_store
from .config import StoreConfig
from .uring import select_backend

RECORD = 1024
RECORDS_PER_BATCH = 254          # 254 * (5 + 1024) + 77 = 261,443 bytes: a 256 KiB batch
GROUP = 8                        # batches per append_many call


def dd_speed(folder: str, mib: int = 2048, *, bs: str = "1M", flags: str = "direct") -> float:
    """Bytes per second of a sequential write by dd (the machine's own limit)."""
    target = os.path.join(folder, "dd.bin")
    count = mib if bs == "1M" else mib * 256
    out = subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", f"bs={bs}", f"count={count}", f"oflag={flags}",
         "conv=fdatasync"], capture_output=True, text=True, check=True).stderr
    os.unlink(target)
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)) / float(m.group(2))


def dd_latency_us(folder: str, count: int = 2000) -> float:
    """Mean latency of one 4 KiB O_DIRECT+O_DSYNC write (dd oflag=direct,dsync)."""
    target = os.path.join(folder, "dd-lat.bin")
    out = subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=4k", f"count={count}",
                          "oflag=direct,dsync"], capture_output=True, text=True, check=True).stderr
    os.unlink(target)
    m = re.search(r"copied, ([\d.]+) s", out)
    return float(m.group(1)) / count * 1e6


def _batch_values(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    blob = rng.integers(0, 256, RECORD * RECORDS_PER_BATCH, dtype=np.uint8).tobytes()
    return [blob[i * RECORD:(i + 1) * RECORD] for i in range(RECORDS_PER_BATCH)]


def bench_append(folder: str, backend: str, total: int, group: int) -> dict:
    path = os.path.join(folder, f"append-{backend}-{group}")
    shutil.rmtree(path, ignore_errors=True)
    batches = [_batch_values(i) for i in range(group)]
    cfg = StoreConfig(backend=backend)
    with open_store(path, create=True, config=cfg) as store:
        topic = store.create_topic("bench")
        written = 0
        start = time.perf_counter()
        while written < total:
            if group == 1:
                r = [topic.append(batches[0])]
            else:
                r = topic.append_many(batches)
            written = r[-1].next_offset
        elapsed = time.perf_counter() - start
        backend_name = store.backend.name
    records = written // (RECORDS_PER_BATCH * (RECORD + 5) + 77) * RECORDS_PER_BATCH
    return {"path": path, "backend": backend_name, "batches_per_call": group, "bytes": written,
            "seconds": elapsed, "mb_s": written / elapsed / 1e6, "records_s": records / elapsed}


def _child(body: str, setup: str = "import lance_store, lance_store.verify") -> tuple[float, int, list[str]]:
    """Run `body` in a fresh Python; returns (seconds the body took, peak RSS, its output).

    A child of its own gives the read its own peak RSS; the body is timed inside
    the child so interpreter start-up is not counted as reading.
    """
    code = (setup + "\nimport time\n_t = time.perf_counter()\n" + body +
            "\nprint('elapsed', time.perf_counter() - _t)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read().split()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark child failed: {body}")
    return float(out[out.index("elapsed") + 1]), usage.ru_maxrss * 1024, out


def _drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def bench_read(path: str) -> dict:
    """verify and scan of a topic, each in a child process (for its peak RSS)."""
    out = {}
    for cold in (True, False):
        label = "cold" if cold else "warm"
        if cold and not _drop_caches():
            continue
        secs, rss, _ = _child(f"from lance_store.verify import verify_path\n"
                              f"r = verify_path({path!r})\nassert not r.damaged, r.findings")
        out[f"verify_{label}_s"] = secs
        out[f"verify_{label}_rss"] = rss
    secs, rss, text = _child(
        "import lance_store\n"
        f"s = lance_store.open({path!r}, readonly=True)\n"
        "n = 0\n"
        "for c in s.topic('bench').scan():\n"
        "    n += len(c)\n"
        "print('records', n)\n")
    out["scan_s"] = secs
    out["scan_rss"] = rss
    out["scan_records"] = int(text[text.index("records") + 1])
    _, base_rss, _ = _child("pass")
    out["import_rss"] = base_rss
    return out


def run_bench(folder: str, *, gib: float = 2.0, scan_gib: float = 4.0, backend: str = "all",
              as_json: bool = False) -> dict:
    os.makedirs(folder, exist_ok=True)
    total = int(gib * (1 << 30))
    say = (lambda *a: None) if as_json else (lambda *a: print(*a, flush=True))
    say(f"benchmark folder {os.path.abspath(folder)} ({os.cpu_count()} cores)")
    dd = dd_speed(folder)
    dd_lat = dd_latency_us(folder)
    say(f"dd O_DIRECT 1 MiB blocks: {dd / 1e6:,.0f} MB/s; dd 4 KiB O_DIRECT+O_DSYNC: {dd_lat:,.0f} us")
    backends = ["uring", "pwritev"] if backend == "all" else [backend]
    results = {"dd_mb_s": dd / 1e6, "dd_4k_dsync_us": dd_lat, "append": []}
    for name in backends:
        try:
            select_backend(name).close()
        except OSError as exc:
            say(f"{name}: not available here ({exc})")
            continue
        for group in (GROUP, 1):
            r = bench_append(folder, name, total if group > 1 else total // 2, group)
            r["ratio_to_dd"] = r["mb_s"] * 1e6 / dd
            results["append"].append(r)
            say(f"append {r['backend']:8s} {group} batch/call: {r['mb_s']:8,.0f} MB/s "
                f"{r['records_s']:12,.0f} records/s  = {r['ratio_to_dd']:.2f} x dd")
            if group == 1:
                shutil.rmtree(r["path"], ignore_errors=True)
    # Grow the first append topic to scan_gib (untimed) for the read measurements.
    first = next((r for r in results["append"] if r["batches_per_call"] == GROUP), None)
    if first is not None:
        path = first["path"]
        with open_store(path) as store:
            topic = store.topic("bench")
            batches = [_batch_values(i) for i in range(GROUP)]
            while topic.high_watermark < scan_gib * (1 << 30):
                topic.append_many(batches)
            size = topic.high_watermark
        reads = bench_read(path)
        reads["bytes"] = size
        for key in ("verify_cold", "verify_warm"):
            if f"{key}_s" in reads:
                say(f"{key.replace('_', ' ')}: {size / reads[key + '_s'] / 1e6:8,.0f} MB/s, "
                    f"peak RSS {reads[key + '_rss'] / 1e6:.0f} MB")
        say(f"scan: {reads['scan_records'] / reads['scan_s']:12,.0f} records/s "
            f"({size / reads['scan_s'] / 1e6:,.0f} MB/s), peak RSS {reads['scan_rss'] / 1e6:.0f} MB "
            f"over {size / (1 << 30):.1f} GiB")
        results["read"] = reads
        for r in results["append"]:
            shutil.rmtree(r["path"], ignore_errors=True)
    results["self_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(results, default=str))
    return results
