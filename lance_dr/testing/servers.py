"""Real servers on loopback for tests and benchmarks: `rsync --daemon` and moto's S3 server.

Each picks a free port, waits until it accepts connections, and stops what it started.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from lance_store.testing.ports import free_port  # noqa: F401  (tests import it from here too)


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class RsyncDaemon:
    """An `rsync --daemon` serving one writable module `dr` rooted at `root`."""

    root: str
    port: int
    proc: subprocess.Popen
    workdir: str
    module: str = "dr"
    owns_workdir: bool = False      # made by start_rsync_daemon: removed by close()

    def url(self, path: str = "") -> str:
        return f"rsync://127.0.0.1:{self.port}/{self.module}" + (f"/{path}" if path else "")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the daemon and every transfer it is serving (its forked children share its
        process group), as when the machine behind a target goes away."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def close(self) -> None:
        """Stop, and remove the work folder when this daemon made it."""
        self.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.proc = _spawn_rsyncd(self.workdir, self.port)
        wait_for_port(self.port, proc=self.proc)


def _spawn_rsyncd(workdir: str, port: int) -> subprocess.Popen:
    conf = os.path.join(workdir, "rsyncd.conf")
    return subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}", "--address=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def start_rsync_daemon(workdir: str | None = None) -> RsyncDaemon:
    if shutil.which("rsync") is None:
        raise RuntimeError("rsync is not installed")
    owns = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="lance-rsyncd-")
    root = os.path.join(workdir, "module")
    os.makedirs(root, exist_ok=True)
    user = "" if os.geteuid() else "uid = root\ngid = root\n"
    with open(os.path.join(workdir, "rsyncd.conf"), "w") as f:
        f.write(f"pid file = {workdir}/rsyncd.pid\nlog file = {workdir}/rsyncd.log\n"
                f"use chroot = false\nreverse lookup = no\nsocket options = TCP_NODELAY\n[dr]\npath = {root}\nread only = false\n{user}")
    port = free_port()
    proc = _spawn_rsyncd(workdir, port)
    wait_for_port(port, proc=proc)
    return RsyncDaemon(root, port, proc, workdir, owns_workdir=owns)


@dataclass
class S3Server:
    """moto's S3-compatible server on loopback, and the s3fs options to reach it."""

    server: object
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def options(self) -> dict:
        return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": self.endpoint,
                                                                        "region_name": "us-east-1"}}

    def make_bucket(self, name: str) -> None:
        import boto3
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=name)

    def stop(self) -> None:
        self.server.stop()


def start_s3_server() -> S3Server:
    import logging

    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port)
    return S3Server(server, port)
