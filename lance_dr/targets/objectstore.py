"""A target on any fsspec filesystem other than local paths: s3:// (s3fs), memory://, gcs://, ...

Objects are written with autocommit off, so an interrupted upload never shows
a partial object; reads are ranged, so downloads resume at a byte offset.
"""
from __future__ import annotations

import os
from typing import Iterable

import fsspec

from ..errors import ObjectMissing, TargetError
from ..throttle import Throttle
from .base import Progress, Target, Upload, _no_progress, check_path

_CHUNK = 16 << 20
# Object stores whose writers publish nothing until commit (multipart uploads and the like).
DEFERRED_COMMIT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
# Where a whole-object write (`write()`) is all-or-nothing.
ATOMIC_PROTOCOLS = DEFERRED_COMMIT | {"memory"}


class FsspecTarget(Target):
    ranged_reads = True
    appendable = False

    def __init__(self, url: str, options: dict | None = None):
        super().__init__(url)
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except ImportError as exc:
            raise TargetError(url, f"needs a package that is not installed: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise TargetError(url, f"cannot open: {exc}") from None
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.scheme = protocol
        self.atomic_publish = protocol in ATOMIC_PROTOCOLS
        self.root = root.rstrip("/")

    def _full(self, path: str) -> str:
        return f"{self.root}/{check_path(path)}"

    def _fail(self, exc: Exception, path: str | None = None) -> TargetError:
        return TargetError(self.url, f"{type(exc).__name__}: {exc}", path=path)

    def list(self, prefix: str = "") -> dict[str, int]:
        top = f"{self.root}/{prefix}".rstrip("/") if prefix else self.root
        try:
            self.fs.invalidate_cache()
            found = self.fs.find(top, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # noqa: BLE001 - any backend failure is a target failure
            raise self._fail(exc) from exc
        strip = len(self.root) + 1
        out = {}
        for full, info in found.items():
            if info.get("type", "file") != "file":
                continue
            full = full.lstrip("/") if not self.root.startswith("/") else full
            out[full[strip:]] = int(info.get("size") or 0)
        return out

    def stat(self, path: str) -> int | None:
        full = self._full(path)
        try:
            self.fs.invalidate_cache()
            info = self.fs.info(full)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, path) from exc
        return int(info.get("size") or 0) if info.get("type", "file") == "file" else None

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        full = self._full(path)
        try:
            return self.fs.cat_file(full, start=start, end=end)
        except FileNotFoundError:
            raise ObjectMissing(self.url, path) from None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, path) from exc

    def write(self, path: str, data: bytes) -> None:
        full = self._full(path)
        try:
            self.fs.pipe_file(full, data)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, path) from exc

    def write_many(self, objects: dict[str, bytes]) -> None:
        if not objects:
            return
        full = {self._full(p): data for p, data in objects.items()}
        try:
            self.fs.pipe(full)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from exc

    def _open_for_write(self, full: str):
        """A writer, and whether it publishes only on commit(); where it does not, a
        failed upload removes what it left."""
        if self.scheme in DEFERRED_COMMIT:
            return self.fs.open(full, "wb", autocommit=False), True
        return self.fs.open(full, "wb"), False

    def upload(self, items: Iterable[Upload], *, progress: Progress = _no_progress,
               bwlimit: int | None = None) -> None:
        throttle = Throttle(bwlimit)
        for item in items:
            full = self._full(item.path)
            try:
                parent = full.rsplit("/", 1)[0]
                self.fs.makedirs(parent, exist_ok=True)
                out, deferred = self._open_for_write(full)
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc, item.path) from exc
            try:
                with open(item.source, "rb") as src:
                    pos = 0
                    while pos < item.length:
                        chunk = os.pread(src.fileno(), min(_CHUNK, item.length - pos), pos)
                        if not chunk:
                            raise TargetError(self.url, f"source {item.source} ended at byte {pos}, "
                                              f"expected {item.length} bytes", path=item.path)
                        out.write(chunk)
                        pos += len(chunk)
                        throttle.consume(len(chunk))
                        progress(len(chunk))
                out.close()
                if deferred:
                    out.commit()
            except BaseException as exc:
                try:
                    out.discard()
                    if not deferred:
                        self.fs.rm_file(full)
                except Exception:  # noqa: BLE001 - the original failure matters more
                    pass
                if isinstance(exc, (TargetError, KeyboardInterrupt)) or not isinstance(exc, Exception):
                    raise
                raise self._fail(exc, item.path) from exc

    def download(self, path: str, dest: str, length: int, *, progress: Progress = _no_progress) -> None:
        size = self.stat(path)
        if size is None:
            raise ObjectMissing(self.url, path)
        if size < length:
            raise TargetError(self.url, f"object holds {size} bytes, expected at least {length}", path=path)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            pos = min(os.fstat(fd).st_size, length)
            os.ftruncate(fd, pos)
            with self.fs.open(self._full(path), "rb", block_size=_CHUNK) as src:
                src.seek(pos)
                while pos < length:
                    chunk = src.read(min(_CHUNK, length - pos))
                    if not chunk:
                        raise TargetError(self.url, f"object ended at byte {pos}", path=path)
                    os.pwrite(fd, chunk, pos)
                    pos += len(chunk)
                    progress(len(chunk))
        except FileNotFoundError:
            raise ObjectMissing(self.url, path) from None
        except TargetError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, path) from exc
        finally:
            os.close(fd)

    def delete(self, paths: Iterable[str]) -> None:
        full = [self._full(p) for p in paths]
        if not full:
            return
        for p in full:
            try:
                self.fs.rm_file(p)
            except FileNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc, p) from exc
