"""DR benchmark: ship a data directory to a local folder and to an rsync daemon, next to a
plain `rsync -a` of the same directory in the same run, then verify the shipped copy.

    python bench/dr_bench.py                 # 2 GiB (the reference size)
    python bench/dr_bench.py --size 64M      # a quick check

Targets: the first ship at >= 80% of rsync's speed, a re-ship with nothing changed
in < 1 s, verify at >= 1 GB/s. A ship fsyncs what it wrote before it publishes
(plain `rsync -a` does not), so `rsync -a --fsync` is measured too, and a ship to
the daemon without fsync. The last line printed is one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import lance_store
from lance_dr import open_target, ship, verify_target
from lance_dr.testing.servers import start_rsync_daemon
from lance_dr.throttle import parse_rate

RECORD = 1024
PER_BATCH = 254                 # a 256 KiB batch
GROUP = 8


def build_data_dir(path: str, size: int) -> int:
    """A data directory of about `size` bytes in one topic, several sealed segments."""
    cfg = lance_store.StoreConfig(segment_max_bytes=max(4 << 20, size // 8))
    blob = np.random.default_rng(7).integers(0, 256, RECORD * PER_BATCH, dtype=np.uint8).tobytes()
    values = [blob[i * RECORD:(i + 1) * RECORD] for i in range(PER_BATCH)]
    with lance_store.open(path, create=True, node_id=1, config=cfg) as store:
        topic = store.create_topic("bench")
        while topic.high_watermark < size:
            topic.append_many([values] * GROUP)
        return topic.high_watermark


def warm(path: str) -> int:
    """Read every file once, so rsync and lance-dr both start from the page cache."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while chunk := fh.read(16 << 20):
                    total += len(chunk)
    return total


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def rsync_plain(src: str, dest: str, *extra: str) -> float:
    seconds, _ = timed(lambda: subprocess.run(["rsync", "-a", *extra, src.rstrip("/") + "/", dest], check=True))
    return seconds


def settle() -> None:
    """Write back what the previous step left dirty, so no step pays for another's flush."""
    subprocess.run(["sync"], check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="data directory size (default 2G)")
    parser.add_argument("--workdir", default=None, help="where to build (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    size = parse_rate(args.size)
    work = tempfile.mkdtemp(prefix="lance-dr-bench-", dir=args.workdir)
    daemon = None
    try:
        data = os.path.join(work, "data")
        built = build_data_dir(data, size)
        total = warm(data)
        mb = total / 1e6
        print(f"data directory: {total / 2**20:.0f} MiB in {data}", file=sys.stderr)
        daemon = start_rsync_daemon(os.path.join(work, "rsyncd"))
        out: dict = {"bytes": total, "topic_bytes": built}

        # Local folder: plain rsync (and rsync --fsync, which is as durable as a ship),
        # then lance-dr ship: first, then again with nothing new.
        settle()
        out["rsync_local_s"] = rsync_plain(data, os.path.join(work, "rsync-local"))
        settle()
        out["rsync_fsync_local_s"] = rsync_plain(data, os.path.join(work, "rsync-fsync-local"), "--fsync")
        settle()
        local = open_target(os.path.join(work, "ship-local"))
        out["ship_local_s"], _ = timed(lambda: ship(data, local))
        out["reship_local_s"], again = timed(lambda: ship(data, local))
        assert again.generation is None, "a re-ship with nothing new published a generation"

        # rsync daemon on loopback: the same, plus a ship without --fsync on the target.
        settle()
        out["rsync_daemon_s"] = rsync_plain(data, daemon.url("rsync-plain"))
        settle()
        out["rsync_fsync_daemon_s"] = rsync_plain(data, daemon.url("rsync-fsync"), "--fsync")
        settle()
        remote = open_target(daemon.url("ship"))
        out["ship_daemon_s"], _ = timed(lambda: ship(data, remote))
        out["reship_daemon_s"], _ = timed(lambda: ship(data, remote))
        settle()
        out["ship_nofsync_daemon_s"], _ = timed(lambda: ship(data, open_target(daemon.url("ship-nofsync"),
                                                                               {"fsync": False})))

        # Verify the shipped local copy (digests, batch CRCs and offsets).
        settle()
        out["verify_local_s"], report = timed(lambda: verify_target(local))
        assert not report.damaged, [str(f) for f in report.findings]

        for kind in ("local", "daemon"):
            for name in ("rsync", "rsync_fsync", "ship"):
                out[f"{name}_{kind}_mb_s"] = round(mb / out[f"{name}_{kind}_s"], 1)
            out[f"ship_vs_rsync_{kind}"] = round(out[f"rsync_{kind}_s"] / out[f"ship_{kind}_s"], 3)
            out[f"ship_vs_rsync_fsync_{kind}"] = round(out[f"rsync_fsync_{kind}_s"] / out[f"ship_{kind}_s"], 3)
        out["ship_nofsync_vs_rsync_daemon"] = round(out["rsync_daemon_s"] / out["ship_nofsync_daemon_s"], 3)
        out["verify_mb_s"] = round(report.bytes_checked / 1e6 / out["verify_local_s"], 1)
        out["targets_met"] = {
            "first_ship_local_80pct": out["ship_vs_rsync_local"] >= 0.8,
            "first_ship_daemon_80pct": out["ship_vs_rsync_daemon"] >= 0.8,
            "reship_local_under_1s": out["reship_local_s"] < 1.0,
            "reship_daemon_under_1s": out["reship_daemon_s"] < 1.0,
            "verify_1gb_s": out["verify_mb_s"] >= 1000,
        }
        for key, value in out.items():
            if key.endswith("_s"):
                out[key] = round(value, 3)
        print(json.dumps(out))
        return 0
    finally:
        if daemon is not None:
            daemon.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
