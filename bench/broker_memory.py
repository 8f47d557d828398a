"""Broker memory under load: ingest GIB gigabytes across TOPICS topics while a
consumer per topic follows, and report the broker's peak resident memory.

    python bench/broker_memory.py                 # 10 GiB across 10 topics
    python bench/broker_memory.py --gib 2         # a quicker check

Data lives on disk and in the page cache, not in the broker: the target is a
peak RSS under 200 MB. The last line printed is one JSON document.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from net_bench import start_broker  # noqa: E402  (a sibling script)

from lance_net.client import Consumer, Producer  # noqa: E402

RECORD = 1024
PER_BATCH = 254


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


async def produce(endpoint: str, topic: str, nbytes: int) -> int:
    values = [os.urandom(RECORD) for _ in range(PER_BATCH)]
    sent = 0
    async with Producer(endpoint, topic, create_topic=True) as producer:
        while sent < nbytes:
            producer.send_batch(values)
            sent += RECORD * PER_BATCH
            await producer.ready()
        await producer.flush()
    return sent // RECORD


async def consume(endpoint: str, topic: str, want: int, stop: asyncio.Event) -> int:
    got = 0
    while True:  # the topic appears with its producer's first batch
        try:
            consumer = Consumer(endpoint, topic, start_from="earliest")
            await consumer.__aenter__()
            break
        except Exception:  # noqa: BLE001 - not created yet
            await asyncio.sleep(0.1)
    try:
        while got < want or not stop.is_set():
            batch = await consumer.poll_batch(timeout=0.5)
            got += len(batch) if batch is not None else 0
            if stop.is_set() and got >= want:
                break
    finally:
        await consumer.__aexit__(None, None, None)
    return got


async def run(endpoint: str, topics: int, nbytes: int) -> tuple[int, int]:
    stop = asyncio.Event()
    per_topic = nbytes // topics
    want = per_topic // RECORD // PER_BATCH * PER_BATCH
    consumers = [asyncio.create_task(consume(endpoint, f"mem-{i}", want, stop)) for i in range(topics)]
    produced = sum(await asyncio.gather(*[produce(endpoint, f"mem-{i}", per_topic) for i in range(topics)]))
    stop.set()
    consumed = sum(await asyncio.gather(*consumers))
    return produced, consumed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=10.0)
    parser.add_argument("--topics", type=int, default=10)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="lance-mem-bench-")
    broker, endpoint, _log = start_broker(folder)
    try:
        started = time.perf_counter()
        produced, consumed = asyncio.run(run(endpoint, args.topics, int(args.gib * (1 << 30))))
        elapsed = time.perf_counter() - started
        rss = peak_rss(broker.pid)
    finally:
        broker.terminate()
        broker.wait(60)
        shutil.rmtree(folder, ignore_errors=True)
    report = {"topics": args.topics, "gib": args.gib, "produced": produced, "consumed": consumed,
              "seconds": round(elapsed, 1), "mb_per_s": round(produced * RECORD / elapsed / 1e6, 1),
              "broker_peak_rss_mb": round(rss / 1e6, 1)}
    print(f"{args.gib} GiB across {args.topics} topics in {elapsed:.0f} s; broker peak RSS "
          f"{rss / 1e6:.0f} MB")
    print(json.dumps(report))
    return 0 if consumed >= produced and rss < 200e6 else 1


if __name__ == "__main__":
    sys.exit(main())
