"""`lance-store bench`: append, verify and scan throughput next to the disk's own limits.

The raw limits (dd with O_DIRECT, 1 MiB blocks; dd O_DIRECT+O_DSYNC 4 KiB writes)
are measured in the same run, on the same folder, right around each measurement
(the disk's speed drifts), so ratios compare like with like.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from . import eventloop
from . import open as open_store
from .config import StoreConfig
from .uring import select_backend

RECORD = 1024
RECORDS_PER_BATCH = 254          # 254 * (5 + 1024) + 77 = 261,443 bytes: a 256 KiB batch
GROUP = 8                        # batches per append_many call
# Batches outstanding in the append_async run: 12 MiB, so a group of up to a buffer
# (8 MiB by default) syncs while the next one fills.
ASYNC_WINDOW = 48


def _dd(*args: str) -> tuple[int, float]:
    """Run dd with `args`; (bytes copied, seconds) from its report."""
    out = subprocess.run(["dd", *args], capture_output=True, text=True, check=True).stderr
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)), float(m.group(2))


def dd_speed(folder: str, mib: int = 2048, *, block_mib: int = 1, flags: str = "direct",
             keep: str | None = None) -> float:
    """Bytes per second of a sequential write by dd (the machine's own limit); the file is
    removed, or kept at `keep` for a read to follow."""
    target = keep or os.path.join(folder, "dd.bin")
    copied, seconds = _dd("if=/dev/zero", f"of={target}", f"bs={block_mib}M",
                          f"count={mib // block_mib}", f"oflag={flags}", "conv=fdatasync")
    if keep is None:
        os.unlink(target)
    return copied / seconds


def dd_latency_us(folder: str, count: int = 2000) -> float:
    """Mean latency of one 4 KiB O_DIRECT+O_DSYNC write (dd oflag=direct,dsync)."""
    target = os.path.join(folder, "dd-lat.bin")
    _, seconds = _dd("if=/dev/zero", f"of={target}", "bs=4k", f"count={count}",
                     "oflag=direct,dsync")
    os.unlink(target)
    return seconds / count * 1e6


def disk_read_speed(folder: str, mib: int = 1024) -> float | None:
    """Bytes per second of a cold sequential buffered read by dd (1 MiB blocks) of a file
    written with O_DIRECT, as a consumer of fresh appends reads; None without the
    permission to drop the page cache."""
    target = os.path.join(folder, "dd-read.bin")
    dd_speed(folder, mib, keep=target)
    try:
        if not _drop_caches():
            return None
        copied, seconds = _dd(f"if={target}", "of=/dev/null", "bs=1M")
    finally:
        os.unlink(target)
    return copied / seconds


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


def bench_async(folder: str, backend: str, total: int, window: int = ASYNC_WINDOW) -> dict:
    """append_async with `window` batches outstanding: the next group fills while
    the previous one syncs."""
    path = os.path.join(folder, f"async-{backend}")
    shutil.rmtree(path, ignore_errors=True)
    batches = [_batch_values(i) for i in range(GROUP)]

    async def run(topic) -> int:
        sem = asyncio.Semaphore(window)
        end = 0

        async def one(values):
            nonlocal end
            try:
                r = await topic.append_async(values)
                end = max(end, r.next_offset)
            finally:
                sem.release()

        tasks = []
        written = 0
        size = RECORDS_PER_BATCH * (RECORD + 5) + 77
        i = 0
        while written < total:
            await sem.acquire()
            tasks.append(asyncio.ensure_future(one(batches[i % GROUP])))
            written += size
            i += 1
        await asyncio.gather(*tasks)
        return end

    with open_store(path, create=True, config=StoreConfig(backend=backend)) as store:
        topic = store.create_topic("bench")
        start = time.perf_counter()
        written = eventloop.run(run(topic))
        elapsed = time.perf_counter() - start
        name = store.backend.name
    shutil.rmtree(path, ignore_errors=True)
    records = written // (RECORDS_PER_BATCH * (RECORD + 5) + 77) * RECORDS_PER_BATCH
    return {"backend": name, "window_batches": window, "bytes": written, "seconds": elapsed,
            "mb_s": written / elapsed / 1e6, "records_s": records / elapsed}


def bench_latency(folder: str, backend: str, count: int = 3000) -> dict:
    """One 1 KiB record per append, one writer, sequential: durable latency."""
    path = os.path.join(folder, f"latency-{backend}")
    shutil.rmtree(path, ignore_errors=True)
    value = os.urandom(RECORD)
    lat = np.empty(count)
    with open_store(path, create=True, config=StoreConfig(backend=backend)) as store:
        topic = store.create_topic("bench")
        for _ in range(50):            # warm up: file creation, first blocks
            topic.append([value])
        for i in range(count):
            t = time.perf_counter()
            topic.append([value])
            lat[i] = time.perf_counter() - t
    shutil.rmtree(path, ignore_errors=True)
    return {"p50_us": float(np.percentile(lat, 50) * 1e6), "p99_us": float(np.percentile(lat, 99) * 1e6),
            "records_s": count / lat.sum()}


def bench_concurrent(folder: str, backend: str, writers: int = 64, seconds: float = 3.0) -> dict:
    """`writers` asyncio tasks each appending one 1 KiB record at a time and
    awaiting it: group commit turns their waits into shared syncs."""
    path = os.path.join(folder, f"concurrent-{backend}")
    shutil.rmtree(path, ignore_errors=True)
    value = os.urandom(RECORD)

    async def run(topic) -> int:
        stop = time.perf_counter() + seconds
        done = 0

        async def writer():
            nonlocal done
            while time.perf_counter() < stop:
                await topic.append_async([value])
                done += 1

        await asyncio.gather(*[writer() for _ in range(writers)])
        return done

    with open_store(path, create=True, config=StoreConfig(backend=backend)) as store:
        topic = store.create_topic("bench")
        start = time.perf_counter()
        done = eventloop.run(run(topic))
        elapsed = time.perf_counter() - start
    shutil.rmtree(path, ignore_errors=True)
    return {"writers": writers, "records_s": done / elapsed}


def _child(body: str, setup: str = "import lance_store, lance_store.verify") -> tuple[float, int, list[str]]:
    """Run `body` in a fresh Python; returns (seconds the body took, peak RSS, its output).

    A child of its own gives the read its own peak RSS; the body is timed inside
    the child so interpreter start-up is not counted as reading.
    """
    # The child reports its own high-water mark (VmHWM): a forked child's
    # rusage can include the parent's memory from before exec.
    code = (setup + "\nimport time\n_t = time.perf_counter()\n" + body +
            "\nprint('elapsed', time.perf_counter() - _t)\n"
            "print('hwm', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n")
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {body}")
    out = proc.stdout.split()
    return float(out[out.index("elapsed") + 1]), int(out[out.index("hwm") + 1]) * 1024, out


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


def _against_dd(folder: str, run, repeats: int, *, durable_block_mib: int = 0) -> dict:
    """run() `repeats` times, each with dd measured right before and right after it: this
    disk's speed drifts from minute to minute, so each ratio is taken against the mean of
    the dd runs around it. Returns the run with the median ratio.

    With durable_block_mib, dd also writes that block size with O_DSYNC (a sync per
    write, as the run makes one per call) after each run: the disk's own speed for
    that pattern, reported as dd_dsync_mb_s beside the plain figure."""
    runs = []
    after = dd_speed(folder, 1024)
    for _ in range(repeats):
        before = after      # one dd between two runs serves both
        r = run()
        after = dd_speed(folder, 1024)
        r["dd_mb_s"] = (before + after) / 2e6
        r["ratio_to_dd"] = r["mb_s"] / r["dd_mb_s"]
        if durable_block_mib:
            r["dd_dsync_mb_s"] = dd_speed(folder, 1024, block_mib=durable_block_mib,
                                          flags="direct,dsync") / 1e6
        runs.append(r)
    return _median_run(runs, "ratio_to_dd")


def _median_run(runs: list[dict], key: str) -> dict:
    """The run with the median `key`, with every run's value (lowest first) as all_<key>."""
    runs = sorted(runs, key=lambda r: r[key])
    return dict(runs[len(runs) // 2], **{f"all_{key}": [round(r[key], 3) for r in runs]})


def _listed(values: list, fmt: str) -> str:
    return "" if len(values) < 2 else f"; median of {', '.join(format(x, fmt) for x in values)}"


def _ratios(r: dict) -> str:
    return _listed(r["all_ratio_to_dd"], ".2f")


def _latency_against_dd(folder: str, backend: str, repeats: int) -> dict:
    """bench_latency `repeats` times, each between two dd latency runs (the disk's flush
    latency drifts like its speed): the run with the median p50 ratio."""
    runs = []
    after = dd_latency_us(folder)
    for _ in range(repeats):
        before = after
        r = bench_latency(folder, backend)
        after = dd_latency_us(folder)
        r["dd_4k_dsync_us"] = (before + after) / 2
        r["p50_vs_dd"] = r["p50_us"] / r["dd_4k_dsync_us"]
        runs.append(r)
    return _median_run(runs, "p50_vs_dd")


def _concurrent_against_one(folder: str, backend: str, repeats: int) -> dict:
    """64 writers against one writer of the same harness (asyncio, one record per
    append_async, awaited), `repeats` times, each 64-writer run right after the one-writer
    run so both see the same disk: the run with the median ratio."""
    runs = []
    for _ in range(repeats):
        one = bench_concurrent(folder, backend, writers=1, seconds=2.0)["records_s"]
        r = bench_concurrent(folder, backend)
        r["one_writer_records_s"] = one
        r["vs_one_writer"] = r["records_s"] / one
        runs.append(r)
    return _median_run(runs, "vs_one_writer")


def run_bench(folder: str, *, gib: float = 2.0, scan_gib: float = 4.0, backend: str = "all",
              as_json: bool = False, repeats: int = 3) -> dict:
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
            r = _against_dd(folder, lambda: bench_append(folder, name, total if group > 1
                                                         else total // 2, group), repeats,
                            durable_block_mib=2 if group == GROUP else 0)
            results["append"].append(r)
            say(f"append {r['backend']:8s} {group} batch/call: {r['mb_s']:8,.0f} MB/s "
                f"{r['records_s']:12,.0f} records/s  = {r['ratio_to_dd']:.2f} x dd "
                f"({r['dd_mb_s']:,.0f} MB/s around it{_ratios(r)})")
            if "dd_dsync_mb_s" in r:
                say(f"    dd itself with a sync per 2 MiB write (oflag=direct,dsync) after that run: "
                    f"{r['dd_dsync_mb_s']:,.0f} MB/s = {r['dd_dsync_mb_s'] / r['dd_mb_s']:.2f} x dd")
            if group == 1:
                shutil.rmtree(r["path"], ignore_errors=True)
        a = _against_dd(folder, lambda: bench_async(folder, name, total), repeats)
        results.setdefault("async", []).append(a)
        say(f"append_async {a['backend']:8s} {a['window_batches']} batches outstanding: "
            f"{a['mb_s']:8,.0f} MB/s {a['records_s']:12,.0f} records/s  = {a['ratio_to_dd']:.2f} x dd "
            f"({a['dd_mb_s']:,.0f} MB/s around it{_ratios(a)})")
        lat = _latency_against_dd(folder, name, repeats)
        results.setdefault("latency", []).append({"backend": name, **lat})
        say(f"1-record appends {name:8s}: p50 {lat['p50_us']:,.0f} us, p99 {lat['p99_us']:,.0f} us "
            f"(dd 4 KiB dsync {lat['dd_4k_dsync_us']:,.0f} us around it: p50 = "
            f"{lat['p50_vs_dd']:.2f} x{_listed(lat['all_p50_vs_dd'], '.2f')}), "
            f"{lat['records_s']:,.0f} records/s")
        conc = _concurrent_against_one(folder, name, repeats)
        results.setdefault("concurrent", []).append({"backend": name, **conc})
        say(f"64 writers {name:8s}: {conc['records_s']:,.0f} records/s = "
            f"{conc['vs_one_writer']:.1f} x one asyncio writer ({conc['one_writer_records_s']:,.0f}"
            f"/s right before it{_listed(conc['all_vs_one_writer'], '.1f')}); "
            f"{conc['records_s'] / lat['records_s']:.1f} x the blocking one-record appends")
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
    print(json.dumps(results, default=str))
    return results
