"""Network benchmark: start `lance-net serve` on a scratch data directory, run `lance-net bench`
against it (producing with durable acks, then consuming), report, stop the broker.

    python bench/net_bench.py                          # 10 s, 1 KiB messages
    python bench/net_bench.py --duration 3 -- --connections 2 --pipeline 16

Arguments after `--` go to `lance-net bench` as they are. Targets on the reference machine:
700,000 msg/s produced and 1,000,000 msg/s consumed by one client process (1 KiB messages).
The last line printed is `lance-net bench`'s JSON report.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

_LISTENING = re.compile(r"lwp: listening on (\S+) ")


def lance_net() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "lance-net")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "lance_net.cli"]


def start_broker(folder: str) -> tuple[subprocess.Popen, str, str]:
    log_path = os.path.join(folder, "broker.log")
    log = open(log_path, "wb")
    broker = subprocess.Popen([*lance_net(), "serve", "--data-dir", os.path.join(folder, "data"),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--msg-size", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("bench_args", nargs="*", help="more `lance-net bench` arguments")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="lance-net-bench-")
    broker, endpoint, log_path = start_broker(folder)
    try:
        result = subprocess.run([*lance_net(), "bench", "--endpoint", endpoint,
                                 "--duration", str(args.duration), "--msg-size",
                                 str(args.msg_size), "--consume", "--broker-pid",
                                 str(broker.pid), *args.bench_args])
        return result.returncode
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
