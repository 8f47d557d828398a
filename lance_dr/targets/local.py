"""A target that is a folder on a local (or mounted) filesystem: plain paths and file:// URLs.

Uploads go to a hidden partial file that is verified and resumed after an
interruption, fsynced, and then renamed into place.
"""
from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Iterable

from lance_store import fsutil

from ..digest import digest_file
from ..errors import ObjectMissing, TargetError
from ..throttle import Throttle
from .base import Progress, Target, Upload, _no_progress, check_path

PARTIAL = ".lance-dr-partial"
_CHUNK = 8 << 20


def partial_name(path: str) -> str:
    """Where an upload of `path` accumulates before it is renamed into place."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}{PARTIAL}")


class LocalTarget(Target):
    scheme = "file"
    ranged_reads = True
    appendable = True
    atomic_publish = True

    def __init__(self, url: str):
        super().__init__(url)
        path = url[len("file://"):] if url.startswith("file://") else url
        self.root = os.path.abspath(os.path.expanduser(path))

    def _full(self, path: str) -> str:
        return os.path.join(self.root, check_path(path))

    def _fail(self, exc: OSError, path: str | None = None) -> TargetError:
        return TargetError(self.url, exc.strerror or str(exc), path=path)

    def list(self, prefix: str = "") -> dict[str, int]:
        top = os.path.join(self.root, prefix) if prefix else self.root
        out: dict[str, int] = {}
        if not os.path.isdir(top):
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise TargetError(self.url, "is not a folder")
            return out
        for folder, _dirs, files in os.walk(top):
            for name in files:
                full = os.path.join(folder, name)
                try:
                    size = os.stat(full).st_size
                except FileNotFoundError:
                    continue  # removed while listing
                out[os.path.relpath(full, self.root).replace(os.sep, "/")] = size
        return out

    def local_path(self, path: str) -> str | None:
        return self._full(path)

    def stat(self, path: str) -> int | None:
        try:
            return os.stat(self._full(path)).st_size
        except FileNotFoundError:
            return None

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            with open(self._full(path), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                end = size if end is None else min(end, size)
                return os.pread(f.fileno(), max(0, end - start), start)
        except FileNotFoundError:
            raise ObjectMissing(self.url, path) from None
        except OSError as exc:
            raise self._fail(exc, path) from exc

    def write(self, path: str, data: bytes) -> None:
        full = self._full(path)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            fsutil.write_atomic(full, data)
        except OSError as exc:
            raise self._fail(exc, path) from exc

    def upload(self, items: Iterable[Upload], *, progress: Progress = _no_progress,
               bwlimit: int | None = None) -> None:
        throttle = Throttle(bwlimit)
        done: list[tuple[int, str, str | None]] = []  # (fd, written file, rename to)
        # Each file is flushed in the background while the next one is copied, so
        # the disk writes overlap the copying; nothing is renamed into place
        # before its bytes are durable.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lance-dr-fsync") as flusher:
            flushed = []
            try:
                for item in items:
                    done.append(self._send(item, throttle, progress))
                    flushed.append(flusher.submit(os.fsync, done[-1][0]))
                for f in flushed:
                    f.result()
                folders = set()
                for fd, written, final in done:
                    if final is not None:
                        os.rename(written, final)
                    folders.add(os.path.dirname(written))
                for folder in folders:
                    fsutil.fsync_dir(folder)
            except OSError as exc:
                raise self._fail(exc) from exc
            finally:
                for f in flushed:
                    f.cancel()
                wait(flushed)
                for fd, _w, _f in done:
                    os.close(fd)

    def _send(self, item: Upload, throttle: Throttle, progress: Progress) -> tuple[int, str, str | None]:
        final = self._full(item.path)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        size = os.path.getsize(final) if os.path.exists(final) else -1
        if item.keep and size >= item.keep:
            # Grow in place: only bytes past `keep` change, and an older
            # generation needs no more than its own (shorter) prefix.
            fd = os.open(final, os.O_WRONLY)
            start, written, rename_to = item.keep, final, None
        else:
            written, rename_to = partial_name(final), final
            fd = os.open(written, os.O_WRONLY | os.O_CREAT, 0o644)
            start = self._resumable(fd, written, item)
        try:
            os.ftruncate(fd, start)
            with open(item.source, "rb") as src:
                pos = start
                while pos < item.length:
                    n = min(_CHUNK, item.length - pos)
                    sent = _copy_range(src.fileno(), fd, pos, n)
                    if sent == 0:
                        raise TargetError(self.url, f"source {item.source} ended at byte {pos}, "
                                          f"expected {item.length} bytes", path=item.path)
                    pos += sent
                    throttle.consume(sent)
                    progress(sent)
        except BaseException:
            os.close(fd)
            raise
        return fd, written, rename_to

    def _resumable(self, fd: int, partial: str, item: Upload) -> int:
        """How much of an interrupted upload's partial file can stay: all of it when its
        bytes equal the source's, else nothing."""
        have = os.fstat(fd).st_size
        if have == 0 or have > item.length:
            return 0
        if digest_file(partial, have) == digest_file(item.source, have):
            return have
        return 0

    def download(self, path: str, dest: str, length: int, *, progress: Progress = _no_progress) -> None:
        src = self._full(path)
        try:
            with open(src, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < length:
                    raise TargetError(self.url, f"object holds {size} bytes, expected at least {length}",
                                      path=path)
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    have = os.fstat(fd).st_size
                    pos = have if have <= length else length
                    os.ftruncate(fd, pos)
                    while pos < length:
                        n = _copy_range(f.fileno(), fd, pos, min(_CHUNK, length - pos))
                        if n == 0:
                            raise TargetError(self.url, f"object ended at byte {pos}", path=path)
                        pos += n
                        progress(n)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            raise ObjectMissing(self.url, path) from None
        except OSError as exc:
            raise self._fail(exc, path) from exc

    def delete(self, paths: Iterable[str]) -> None:
        folders = set()
        for path in paths:
            full = self._full(path)
            try:
                os.unlink(full)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._fail(exc, path) from exc
            folders.add(os.path.dirname(full))
        for folder in sorted(folders, key=len, reverse=True):
            _prune_empty(folder, self.root)


def _copy_range(src_fd: int, dst_fd: int, pos: int, n: int) -> int:
    """Copy n bytes at the same position of two files, in the kernel where it can."""
    try:
        return os.copy_file_range(src_fd, dst_fd, n, pos, pos)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    data = os.pread(src_fd, n, pos)
    view = memoryview(data)
    at = pos
    while view:
        k = os.pwrite(dst_fd, view, at)
        view, at = view[k:], at + k
    return len(data)


def _prune_empty(folder: str, root: str) -> None:
    """Remove folders left empty by deletes, up to (not including) the root."""
    root = os.path.abspath(root)
    while os.path.abspath(folder).startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)
