"""A local `lance-net serve` that a chaos run starts, kills with SIGKILL and starts again.

Owns that one child process: its data directory, its log, and the port it keeps across
restarts so clients reconnect to the same address; it never touches a broker it did not start.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lance_net.replication.testing import lance_net_command
from lance_store.errors import LanceError

START_TIMEOUT_S = 60.0
_LISTENING = re.compile(rb"lwp: listening on \[?([^\]\s]+?)\]?:(\d+) ")


class NodeFailed(LanceError):
    """The spawned broker exited, or did not listen in time; the message ends with its log."""


class SpawnedNode:
    """One broker process on 127.0.0.1.

    The first start listens on a free port (port 0) read back from the log; restarts reuse
    it. The log, and the data directory unless one is given, live in a scratch directory
    that close() removes.
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, *, host: str = "127.0.0.1"):
        self._scratch = Path(tempfile.mkdtemp(prefix="lance-chaos-"))
        self.data_dir = Path(data_dir) if data_dir else self._scratch / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._scratch / "broker.log"
        self.host = host
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def restarted_pid(self) -> int:
        """The process id of the broker started last."""
        return self.process.pid

    async def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the broker and return once it listens (recovery done: LWP opens after it)."""
        with open(self.log_path, "ab") as log:
            log_start = log.tell()
            self.process = subprocess.Popen(
                [*lance_net_command(), "serve", "--data-dir", str(self.data_dir),
                 "--listen", f"{self.host}:{self.port}", "--http", "off",
                 "--log-level", "info"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            found = _LISTENING.search(self._log_since(log_start))
            if found:
                self.port = int(found.group(2))
                self.starts += 1
                return
            if self.process.poll() is not None:
                raise NodeFailed(f"broker on {self.data_dir} exited with "
                                 f"{self.process.returncode} before listening; log "
                                 f"{self.log_path}:\n{self._log_since(log_start).decode(errors='replace')}")
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise NodeFailed(f"broker on {self.data_dir} did not listen within {timeout} s; "
                                 f"log {self.log_path}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL and reap: a crash, as far as the data directory can tell."""
        if self.running:
            self.process.kill()
            self.process.wait()
            self.kills += 1

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the broker drains), SIGKILL after `timeout`; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def close(self) -> None:
        """Stop the broker and remove the scratch directory (a given data directory stays)."""
        self.stop()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _log_since(self, start: int) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read()
        except FileNotFoundError:
            return b""
