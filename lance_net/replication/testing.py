"""A real single-member etcd server on loopback, for tests and local clusters.

Owns the etcd child process it starts (ports, data directory, pause and resume); nothing else.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ETCD_BINARY = os.environ.get("LANCE_ETCD", "etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """`with EtcdServer() as etcd: etcd.url ...` starts etcd and stops it on exit.

    `pause()`/`resume()` freeze the process (SIGSTOP/SIGCONT), which is how a test makes
    keepalives go unanswered; `kill()` ends it for good.
    """

    def __init__(self, *, binary: str = ETCD_BINARY, startup_timeout: float = 20.0):
        self.binary = shutil.which(binary) or binary
        self.startup_timeout = startup_timeout
        self.client_port = 0
        self.peer_port = 0
        self.data_dir = ""
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> "EtcdServer":
        self.data_dir = tempfile.mkdtemp(prefix="lance-etcd-")
        last_error = ""
        for _ in range(3):  # a port picked free can be taken before etcd binds it
            self.client_port, self.peer_port = free_port(), free_port()
            peer = f"http://127.0.0.1:{self.peer_port}"
            self._log = open(os.path.join(self.data_dir, "etcd.log"), "wb")
            self.process = subprocess.Popen(
                [self.binary, "--name", "lance-test", "--data-dir", os.path.join(self.data_dir, "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"lance-test={peer}", "--log-level", "error"],
                stdout=self._log, stderr=subprocess.STDOUT)
            if self._wait_healthy():
                return self
            last_error = self._tail_log()
            self._terminate()
        raise RuntimeError(f"etcd at {self.url} did not become healthy within "
                           f"{self.startup_timeout} s; its log ends: {last_error}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.05)
        return False

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as reply:
                return b'"true"' in reply.read()
        except OSError:
            return False

    def _tail_log(self) -> str:
        try:
            with open(os.path.join(self.data_dir, "etcd.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        self._terminate()

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._terminate()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
