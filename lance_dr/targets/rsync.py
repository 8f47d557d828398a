"""A target reached through the system `rsync`: rsync://host[:port]/module/path (daemon) and host:/path (ssh).

Every operation is one rsync run; uploads and downloads use --partial
--append-verify, so an interrupted transfer continues and is checked whole.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from ..errors import ObjectMissing, SourceChanged, TargetError
from .base import Progress, Target, Upload, _no_progress, check_path

# rsync(1) EXIT VALUES, for messages an operator can act on.
EXIT_CODES = {
    1: "syntax or usage error", 2: "protocol incompatibility", 3: "errors selecting input/output files",
    5: "error starting client-server protocol", 10: "error in socket I/O", 11: "error in file I/O",
    12: "error in rsync protocol data stream", 20: "interrupted", 23: "partial transfer due to error",
    24: "source files vanished", 30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
}
SSH_URL = re.compile(r"^(?:[^@/:]+@)?[A-Za-z0-9._\-\[\]]+:(?!//)")
_PROGRESS = re.compile(rb"^\s*([\d,]+)\s+\d+%")
_MISSING = ("No such file or directory", "does not exist")


def is_rsync_url(url: str) -> bool:
    return url.startswith("rsync://") or bool(SSH_URL.match(url))


class RsyncTarget(Target):
    scheme = "rsync"
    ranged_reads = False
    appendable = True
    atomic_publish = True     # rsync writes a temp file and renames it into place

    def __init__(self, url: str, *, binary: str = "rsync", timeout: int = 60, extra_args=(),
                 fsync: bool = True):
        super().__init__(url)
        # With fsync the target's disk holds every file before LATEST names it;
        # without, a crash of the target host can lose files a published generation needs.
        self.fsync = fsync
        self.binary = shutil.which(binary)
        if self.binary is None:
            raise TargetError(url, f"{binary!r} is not installed (rsync targets need the rsync binary)")
        self.base = url.rstrip("/")
        self.daemon = url.startswith("rsync://")
        self.timeout = timeout
        self.extra_args = list(extra_args)

    def _durable(self) -> list[str]:
        return ["--fsync"] if self.fsync else []

    def _remote(self, path: str = "") -> str:
        return f"{self.base}/{check_path(path)}" if path else f"{self.base}/"

    def _run(self, args: list[str], *, what: str, path: str | None = None,
             progress: Progress | None = None) -> subprocess.CompletedProcess:
        cmd = [self.binary, f"--timeout={self.timeout}", *self.extra_args, *args]
        if self.daemon:
            # Without TCP_NODELAY every round trip of the protocol waits out a delayed ACK.
            cmd[1:1] = ["--no-motd", "--contimeout=10", "--sockopts=TCP_NODELAY"]
        if progress is None:
            proc = subprocess.run(cmd, capture_output=True)
        else:
            proc = _run_with_progress(cmd, progress)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            if proc.returncode == 24:
                raise SourceChanged(f"{what}: a source file vanished during the transfer ({err})")
            if path is not None and any(m in err for m in _MISSING) and proc.returncode == 23:
                raise ObjectMissing(self.url, path)
            tail = " | ".join(err.splitlines()[-3:])
            meaning = EXIT_CODES.get(proc.returncode, "failed")
            raise TargetError(self.url, f"{what}: rsync exited {proc.returncode} ({meaning}): {tail}",
                              path=path)
        return proc

    def list(self, prefix: str = "") -> dict[str, int]:
        prefix = prefix.strip("/")
        remote = self._remote(prefix) + "/" if prefix else self._remote()
        try:
            proc = self._run(["--list-only", "-r", "--no-human-readable", remote], what="list",
                             path=prefix or ".")
        except ObjectMissing:
            return {}
        return {f"{prefix}/{rel}" if prefix else rel: size for rel, size in _file_lines(proc.stdout)}

    def stat(self, path: str) -> int | None:
        try:
            proc = self._run(["--list-only", "--no-human-readable", self._remote(path)], what="stat",
                             path=path)
        except ObjectMissing:
            return None
        found = dict(_file_lines(proc.stdout))
        return found.get(path.rsplit("/", 1)[-1])

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        with tempfile.TemporaryDirectory(prefix="lance-dr-read-") as tmp:
            local = os.path.join(tmp, "object")
            self._run([self._remote(path), local], what="read", path=path)
            with open(local, "rb") as f:
                f.seek(start)
                return f.read() if end is None else f.read(max(0, end - start))

    def write(self, path: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="lance-dr-write-") as tmp:
            local = os.path.join(tmp, os.path.basename(path))
            with open(local, "wb") as f:
                f.write(data)
            self._run(["--mkpath", "--ignore-times", *self._durable(), local, self._remote(path)],
                      what="write", path=path)

    def write_many(self, objects: dict[str, bytes]) -> None:
        if not objects:
            return
        with tempfile.TemporaryDirectory(prefix="lance-dr-write-") as tmp:
            for path, data in objects.items():
                local = os.path.join(tmp, check_path(path))
                os.makedirs(os.path.dirname(local), exist_ok=True)
                with open(local, "wb") as f:
                    f.write(data)
            self._run(["-r", "--ignore-times", *self._durable(), tmp + "/", self._remote()], what="write")

    def upload(self, items: Iterable[Upload], *, progress: Progress = _no_progress,
               bwlimit: int | None = None) -> None:
        items = list(items)
        if not items:
            return
        present = self.list() if any(i.listed is None for i in items) else {}

        def size(item: Upload) -> int:
            return item.listed if item.listed is not None else present.get(item.path, -1)

        # Objects already as long as (or longer than) what is sent cannot be
        # appended to: rsync's delta transfer rewrites them, atomically.
        grow = [i for i in items if size(i) < i.length]
        rewrite = [i for i in items if size(i) >= i.length]
        for group, mode in ((grow, ["--partial", "--append-verify"]), (rewrite, [])):
            if group:
                self._send(group, mode, bwlimit, progress)

    def _send(self, items: list[Upload], mode: list[str], bwlimit: int | None, progress: Progress) -> None:
        args = ["-r", "--copy-links", "--ignore-times", *self._durable(), *mode, "--info=progress2",
                "--no-inc-recursive"]
        if bwlimit:
            args.append(f"--bwlimit={max(1, bwlimit // 1024)}")
        lanes = _lanes(items) if self.fsync and not bwlimit else [items]
        if len(lanes) == 1:
            self._send_lane(lanes[0], args, progress)
            return
        # Two rsyncs at once: while one receiver fsyncs a finished file, the
        # other keeps the transfer going, so durability costs less time.
        lock = threading.Lock()

        def shared(n: int) -> None:
            with lock:
                progress(n)

        with ThreadPoolExecutor(len(lanes), thread_name_prefix="lance-dr-rsync") as pool:
            for done in [pool.submit(self._send_lane, lane, args, shared) for lane in lanes]:
                done.result()

    def _send_lane(self, items: list[Upload], args: list[str], progress: Progress) -> None:
        with tempfile.TemporaryDirectory(prefix="lance-dr-stage-") as stage:
            for item in items:
                _stage(stage, item)
            # rsync counts the bytes of files brought up to date, kept prefixes
            # included; report the share that is actually new.
            advance = _Scaled(progress, sum(i.length - i.keep for i in items), sum(i.length for i in items))
            self._run([*args, stage + "/", self._remote()], what="upload", progress=advance)
            advance.finish()

    def download(self, path: str, dest: str, length: int, *, progress: Progress = _no_progress) -> None:
        self._run(["--partial", "--append-verify", "--ignore-times", self._remote(path), dest],
                  what="download", path=path)
        size = os.path.getsize(dest)
        if size < length:
            raise TargetError(self.url, f"object holds {size} bytes, expected at least {length}", path=path)
        if size > length:
            os.truncate(dest, length)
        progress(length)

    def delete(self, paths: Iterable[str]) -> None:
        paths = [check_path(p) for p in paths]
        if not paths:
            return
        # rsync deletes what an (empty) source lacks; "risk" rules name the
        # doomed files and "protect *" keeps every other file on the target.
        with tempfile.TemporaryDirectory(prefix="lance-dr-empty-") as empty:
            rules = os.path.join(empty, ".rules")
            with open(rules, "w") as f:
                f.writelines(f"R /{_escape(p)}\n" for p in paths)
                f.write("P *\n")
            src = os.path.join(empty, "src")
            os.makedirs(src)
            # rsync only deletes inside folders the source has, so mirror the
            # doomed files' folders (empty) in the source.
            for p in paths:
                os.makedirs(os.path.join(src, os.path.dirname(p)), exist_ok=True)
            self._run(["-r", "--delete", f"--filter=merge {rules}", os.path.join(empty, "src") + "/",
                       self._remote()], what="delete")


# Below this many bytes a second rsync process costs more than it hides.
PARALLEL_BYTES = 64 << 20


def _lanes(items: list[Upload]) -> list[list[Upload]]:
    """Split a large upload in two lanes of about equal bytes (largest first)."""
    if len(items) < 2 or sum(i.length - i.keep for i in items) < PARALLEL_BYTES:
        return [items]
    lanes: list[list[Upload]] = [[], []]
    loads = [0, 0]
    for item in sorted(items, key=lambda i: i.length - i.keep, reverse=True):
        k = loads.index(min(loads))
        lanes[k].append(item)
        loads[k] += item.length - item.keep
    return [lane for lane in lanes if lane]


class _Scaled:
    """Turns rsync's running count of file bytes into a count of bytes sent."""

    def __init__(self, progress: Progress, sent: int, files: int):
        self.progress, self.sent, self.files = progress, sent, max(files, 1)
        self.seen = self.given = 0

    def __call__(self, n: int) -> None:
        self.seen += n
        share = min(self.sent, self.seen * self.sent // self.files)
        if share > self.given:
            self.progress(share - self.given)
            self.given = share

    def finish(self) -> None:
        if self.sent > self.given:
            self.progress(self.sent - self.given)
            self.given = self.sent


def _file_lines(stdout: bytes):
    """(name, size) of each regular file in `rsync --list-only` output."""
    for line in stdout.decode(errors="surrogateescape").splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[0].startswith("-"):  # not folders, symlinks, the motd
            yield parts[4], int(parts[1].replace(",", ""))


def _escape(path: str) -> str:
    # Filter rules treat *, ? and [ as wildcards; our names never hold them,
    # but a stray one must not widen a delete.
    return re.sub(r"([*?\[\\])", r"\\\1", path)


def _stage(stage: str, item: Upload) -> None:
    """Lay out what rsync sends: a symlink to a whole file, or a copy of a prefix."""
    dest = os.path.join(stage, item.path)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.getsize(item.source) == item.length:
        os.symlink(os.path.abspath(item.source), dest)
        return
    with open(item.source, "rb") as src, open(dest, "wb") as out:
        pos = 0
        while pos < item.length:
            n = os.copy_file_range(src.fileno(), out.fileno(), item.length - pos, pos, pos)
            if n == 0:
                raise TargetError("stage", f"source {item.source} ended at byte {pos}, expected "
                                  f"{item.length} bytes", path=item.path)
            pos += n


def _run_with_progress(cmd: list[str], progress: Progress) -> subprocess.CompletedProcess:
    """Run rsync with --info=progress2 and report its running byte count as it goes."""
    # stderr goes to a file: a pipe left unread while stdout is drained could fill and stall rsync.
    errfile = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile)
    reported = 0
    buf = b""
    while True:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = re.split(rb"[\r\n]", buf)
        for line in lines:
            m = _PROGRESS.match(line)
            if m:
                total = int(m.group(1).replace(b",", b""))
                if total > reported:
                    progress(total - reported)
                    reported = total
    proc.wait()
    errfile.seek(0)
    stderr = errfile.read()
    errfile.close()
    return subprocess.CompletedProcess(cmd, proc.returncode, b"", stderr)
