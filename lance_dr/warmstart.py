"""Warm start: restore a generation, then run `lance-net serve` on it and wait until it is ready.

The broker is a separate program; this module only starts it and polls its
HTTP readiness probe (GET /health/ready on the --http address).
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .errors import DRError
from .restore import RestorePoint, RestoreResult, restore
from .progress import ProgressBar, no_bar
from .targets.base import Target


class BrokerUnavailable(DRError):
    pass


@dataclass
class WarmStart:
    restore: RestoreResult
    process: subprocess.Popen
    ready_seconds: float
    http: str
    listen: str

    def as_dict(self) -> dict:
        return {"restore": self.restore.as_dict(), "pid": self.process.pid,
                "ready_seconds": self.ready_seconds, "http": self.http, "listen": self.listen}


def broker_command() -> list[str]:
    """How to run `lance-net`, or BrokerUnavailable saying why it cannot run here."""
    exe = shutil.which("lance-net") or _beside_python("lance-net")
    if exe is None:
        raise BrokerUnavailable("the broker is not installed: no `lance-net` on PATH")
    try:
        server = importlib.import_module("lance_net.server")
    except ImportError as exc:
        raise BrokerUnavailable(f"the broker cannot start: lance_net.server does not import ({exc})") from None
    if not hasattr(server, "run"):
        raise BrokerUnavailable("the broker cannot start: lance_net.server has no run()")
    return [exe]


def _beside_python(name: str) -> str | None:
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else None


def wait_ready(http: str, process: subprocess.Popen, timeout: float) -> float:
    """Poll http://<http>/health/ready until 200; seconds it took."""
    url = f"http://{http}/health/ready"
    started = time.monotonic()
    while True:
        code = process.poll()
        if code is not None:
            raise DRError(f"lance-net serve exited with code {code} before {url} answered 200")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise DRError(f"{url} did not answer 200 within {timeout:.0f} s (lance-net serve pid "
                          f"{process.pid} is still running)")
        time.sleep(0.1)


def warm_start(target: Target, dest, *, listen: str, http: str, config: str | None = None,
               generation: int | None = None, point: RestorePoint = RestorePoint(),
               node_id: int | None = None, force: bool = False, ready_timeout: float = 60.0,
               progress: ProgressBar = no_bar, log_file=None) -> WarmStart:
    """Restore into `dest` and start a broker there; returns once it is ready (or raises,
    stopping the broker it started). The caller owns the returned process."""
    cmd = broker_command()
    result = restore(target, dest, generation=generation, point=point, node_id=node_id, force=force,
                     progress=progress)
    args = [*cmd, "serve", "--data-dir", result.path, "--listen", listen, "--http", http]
    if config:
        args += ["--config", config]
    if node_id is not None:
        args += ["--node-id", str(node_id)]
    log = log_file if log_file is not None else tempfile.TemporaryFile()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               start_new_session=True)
    try:
        seconds = wait_ready(http, process, ready_timeout)
    except BaseException as exc:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        if isinstance(exc, DRError) and log_file is None:
            raise DRError(f"{exc}; the data is restored in {result.path}; broker output: "
                          f"{_tail(log)}") from None
        raise
    finally:
        if log_file is None:
            log.close()
    return WarmStart(result, process, seconds, http, listen)


def _tail(log, lines: int = 5) -> str:
    log.seek(0)
    text = log.read().decode(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(none)"
