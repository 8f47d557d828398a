"""L3 next to L1 on one machine: one producer of 1 KiB records, and failover time.

    python bench/l3_bench.py                      # 10 s per mode, 3 leader kills
    python bench/l3_bench.py --seconds 5 --kills 2

Starts a real etcd, a three-node L3 cluster and a standalone (L1) broker on loopback.
For each mode one producer (lance_net.client, idempotent, default batching) sends
1 KiB records for --seconds: records acknowledged per second and the batch ack
latency (p50, p99). Then --kills times: an idempotent producer writes to the
cluster, the leader is SIGKILLed, and the failover time is the gap between the
last ack from the old leader and the first from its successor (the killed node is
restarted and rejoins before the next kill). The last line printed is one JSON
document.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from net_bench import start_broker  # noqa: E402  (a sibling script)

from lance_net.client import Producer  # noqa: E402
from lance_net.protocol import CreateTopic, TopicResponse  # noqa: E402
from lance_net.replication.testing import (BlockingLink, ClusterProducer, EtcdServer,  # noqa: E402
                                           LocalCluster)

RECORD = 1024
PER_BATCH = 254    # records per batch: one batch fills the producer's default batch_bytes


async def produce_for(endpoint: str, topic: str, seconds: float) -> dict:
    values = [os.urandom(RECORD) for _ in range(PER_BATCH)]
    async with Producer(endpoint, topic, create_topic=True, track_latency=True) as producer:
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            producer.send_batch(values)
            await producer.ready()
        await producer.flush()
        elapsed = time.perf_counter() - began
        stats = producer.stats
        latencies = sorted(stats.latencies_s)
    return {
        "records": stats.records_acked,
        "msg_per_s": round(stats.records_acked / elapsed),
        "mib_per_s": round(stats.bytes_acked / elapsed / (1 << 20), 1),
        "ack_p50_ms": round(_quantile(latencies, 0.50) * 1000, 2),
        "ack_p99_ms": round(_quantile(latencies, 0.99) * 1000, 2),
    }


def _quantile(values, q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def create_topic(endpoint: str, name: str) -> int:
    with BlockingLink(endpoint, timeout=30) as link:
        reply = link.request(CreateTopic(name))
    if not isinstance(reply, TopicResponse):
        raise SystemExit(f"CreateTopic {name}: {reply}")
    return int(reply.data["id"])


def failover_once(cluster: LocalCluster, topic_id: int, warmup: int) -> float:
    leader = cluster.leader()
    producer = ClusterProducer([n.endpoint for n in cluster.nodes.values()], topic_id,
                               record_size=RECORD).start()
    try:
        _wait(lambda: len(producer.acked) >= warmup or producer.error, "acks before the kill")
        leader.kill()
        before = len(producer.acked)
        _wait(lambda: any(ep != leader.endpoint for _, _, ep in producer.acks[before:])
              or producer.error, "an ack from the new leader")
    finally:
        producer.finish(120)
    last_old = max(t for _, t, ep in producer.acks if ep == leader.endpoint)
    first_new = min(t for _, t, ep in producer.acks if ep != leader.endpoint)
    leader.start()
    cluster.wait_ready(120)
    return first_new - last_old


def _wait(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout} s")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--seconds", type=float, default=10.0, help="producing time per mode")
    parser.add_argument("--kills", type=int, default=3, help="leader kills for the failover time")
    parser.add_argument("--lease-ttl", type=int, default=5,
                        help="[replication] lease_ttl_s of the cluster (failover waits for it)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="lance-l3-bench-")
    results: dict = {"record_bytes": RECORD, "seconds": args.seconds, "lease_ttl_s": args.lease_ttl}
    os.makedirs(os.path.join(root, "l1"))
    l1, l1_endpoint, _ = start_broker(os.path.join(root, "l1"))
    try:
        with EtcdServer() as etcd, LocalCluster(
                os.path.join(root, "l3"), etcd.url, cluster="bench",
                config_toml=f"[replication]\nlease_ttl_s = {args.lease_ttl}\n") as cluster:
            leader = cluster.leader()
            results["l1"] = asyncio.run(produce_for(l1_endpoint, "bench", args.seconds))
            print("l1", json.dumps(results["l1"]), flush=True)
            results["l3"] = asyncio.run(produce_for(leader.endpoint, "bench", args.seconds))
            print("l3", json.dumps(results["l3"]), flush=True)
            if args.kills:
                topic_id = create_topic(cluster.leader().endpoint, "failover")
                times = []
                for i in range(args.kills):
                    took = failover_once(cluster, topic_id, warmup=2000)
                    times.append(took)
                    print(f"failover {i + 1}: {took:.2f} s", flush=True)
                results["failover_s"] = {"median": round(statistics.median(times), 2),
                                         "all": [round(t, 2) for t in times]}
    finally:
        l1.kill()
        l1.wait()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
