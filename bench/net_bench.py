"""Network benchmark: start `lance-net serve` on a scratch data directory, run `lance-net bench`
against it (producing with durable acks, then consuming), report, stop the broker.

    python bench/net_bench.py                          # 10 s, 1 KiB messages
    python bench/net_bench.py --duration 3 -- --connections 2 --pipeline 16

Arguments after `--` go to `lance-net bench` as they are. First the machine's own limits are
measured in the same folder: the disk's O_DIRECT write speed (dd, 1 MiB blocks), its cold read
speed (what a consumer of fresh appends reads at: appends bypass the page cache), and loopback
TCP between two processes. Targets on the reference machine: 700,000 msg/s produced and
1,000,000 msg/s consumed by one client process (1 KiB messages). The last line printed is
`lance-net bench`'s JSON report with the limits and the ratios added.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from lance_net.replication.testing import lance_net_command
from lance_store.bench import dd_speed, disk_read_speed

_LISTENING = re.compile(r"lwp: listening on (\S+) ")


def start_broker(folder: str) -> tuple[subprocess.Popen, str, str]:
    log_path = os.path.join(folder, "broker.log")
    log = open(log_path, "wb")
    broker = subprocess.Popen([*lance_net_command(), "serve", "--data-dir", os.path.join(folder, "data"),
                               "--listen", "127.0.0.1:0", "--http", "off"],
                              stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as f:
            text = f.read()
        match = _LISTENING.search(text)
        if match and "ready" in text:
            return broker, match.group(1), log_path
        if broker.poll() is not None:
            raise SystemExit(f"the broker exited with {broker.returncode}:\n{text}")
        time.sleep(0.05)
    broker.kill()
    raise SystemExit("the broker did not become ready within 60 s")


_RECEIVER = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
view = memoryview(bytearray(1 << 20))
got, began = 0, time.perf_counter()
while n := s.recv_into(view):
    got += n
print(got / (time.perf_counter() - began))
"""


def loopback_speed(gib: float = 2.0) -> float:
    """Bytes per second one process sends another over loopback TCP (1 MiB sends, recv_into
    1 MiB): the most a fetch can move here, before any protocol work."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER, str(server.getsockname()[1])],
                                    stdout=subprocess.PIPE, text=True)
        conn, _ = server.accept()
        with conn:
            chunk = memoryview(bytes(1 << 20))
            for _ in range(int(gib * 1024)):
                conn.sendall(chunk)
        out, _ = receiver.communicate(timeout=120)
    return float(out)


def machine_limits(folder: str) -> dict:
    read = disk_read_speed(folder)
    return {"disk_write_mb_per_s": round(dd_speed(folder, 1024) / 1e6, 1),
            "disk_cold_read_mb_per_s": round(read / 1e6, 1) if read else None,
            "loopback_mb_per_s": round(loopback_speed() / 1e6, 1)}


def with_ratios(report: dict, limits: dict) -> dict:
    """The bench report with the limits and what fraction of them it reached."""
    out = dict(report, **limits)
    out["produce_vs_disk_write"] = round(report["mb_per_s"] / limits["disk_write_mb_per_s"], 3)
    if "consume_mb_per_s" in report:
        ceiling = min(v for v in (limits["disk_cold_read_mb_per_s"], limits["loopback_mb_per_s"]) if v)
        out["consume_vs_ceiling"] = round(report["consume_mb_per_s"] / ceiling, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--msg-size", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("bench_args", nargs="*", help="more `lance-net bench` arguments")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="lance-net-bench-")
    limits = machine_limits(folder)
    print("limits: disk write {disk_write_mb_per_s} MB/s (dd O_DIRECT), disk cold read "
          "{disk_cold_read_mb_per_s} MB/s, loopback TCP {loopback_mb_per_s} MB/s".format(**limits),
          flush=True)
    broker, endpoint, log_path = start_broker(folder)
    try:
        result = subprocess.run([*lance_net_command(), "bench", "--endpoint", endpoint,
                                 "--duration", str(args.duration), "--msg-size",
                                 str(args.msg_size), "--consume", "--broker-pid",
                                 str(broker.pid), *args.bench_args],
                                stdout=subprocess.PIPE, text=True)
        lines = result.stdout.splitlines()
        print("\n".join(lines[:-1]))
        if result.returncode or not lines:
            return result.returncode or 1
        report = with_ratios(json.loads(lines[-1]), limits)
        print(f"ratios: produce {report['produce_vs_disk_write']} of the disk's write speed, "
              f"consume {report.get('consume_vs_ceiling')} of min(cold read, loopback)")
        print(json.dumps(report))
        return 0
    finally:
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder} (broker log: {log_path})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
