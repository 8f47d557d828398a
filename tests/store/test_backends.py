"""Both write backends run the shared conformance suite; io_uring specifics follow it.

The io_uring backend runs once per sync method (RWF_DSYNC, linked fdatasync).
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lance_store.segment.writer import open_for_append
from lance_store.testing.backends import BackendConformance, aligned, block, read_back
from lance_store.uring import PwritevBackend, select_backend
from lance_store.uring.backend import BLOCK, BufferPool
from lance_store.uring.ring import UringBackend

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["tmp", "checkout"])
def scratch_dir(request, tmp_path):
    """O_DIRECT is tried where tests put files and on the project's own filesystem."""
    if request.param == "tmp":
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=CHECKOUT, prefix=".scratch-") as path:
        yield Path(path)


class TestUringBackend(BackendConformance):
    @pytest.fixture(params=["dsync", "fsync"])
    def backend(self, request):
        backend = UringBackend(sync_method=request.param)
        yield backend
        backend.close()

    @pytest.fixture
    def scratch_dir(self, scratch_dir):
        return scratch_dir


class TestPwritevBackend(BackendConformance):
    @pytest.fixture
    def backend(self):
        backend = PwritevBackend()
        yield backend
        backend.close()

    @pytest.fixture
    def scratch_dir(self, scratch_dir):
        return scratch_dir


def test_auto_picks_io_uring_where_the_kernel_allows_it():
    backend = select_backend("auto")
    try:
        assert backend.name == "uring"
    finally:
        backend.close()


def test_forced_pwritev_and_unknown_names():
    backend = select_backend("pwritev")
    try:
        assert isinstance(backend, PwritevBackend)
    finally:
        backend.close()
    with pytest.raises(ValueError, match="unknown io backend 'spdk'"):
        select_backend("spdk")


def test_ring_the_kernel_refuses_raises_oserror():
    with pytest.raises(OSError) as caught:
        UringBackend(entries=1 << 20)
    assert caught.value.errno == errno.EINVAL
    assert "EINVAL" in str(caught.value) and "1048576 entries" in str(caught.value)


def test_unknown_sync_method_is_refused():
    with pytest.raises(ValueError, match="sync_method 'fua'"):
        UringBackend(sync_method="fua")


def test_without_the_extension_auto_falls_back_to_pwritev():
    script = ("import sys; sys.modules['lance_store.uring._uring'] = None\n"
              "from lance_store.uring import select_backend\n"
              "backend = select_backend('auto'); print(backend.name); backend.close()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pwritev"


def test_registered_pool_buffers_go_out_as_write_fixed(tmp_path):
    backend = UringBackend()
    fd, _ = open_for_append(tmp_path / "a.lnc", direct=True, create=True)
    try:
        pool = BufferPool(2, 16 * BLOCK)
        assert backend.register_buffers(pool)
        buf = pool.take()
        buf[:BLOCK] = block(3)
        backend.wait(backend.submit(fd, 0, [memoryview(buf)[:BLOCK]], sync=True))
        assert backend.stats["fixed_writes"] == 1
        backend.wait(backend.submit(fd, BLOCK, [aligned(block(4))], sync=True))
        assert backend.stats["fixed_writes"] == 1
        assert backend.stats["groups"] == 2
    finally:
        os.close(fd)
        backend.close()
    assert read_back(tmp_path / "a.lnc", 2 * BLOCK) == block(3) + block(4)


def test_small_blocking_writes_skip_an_idle_ring(tmp_path):
    backend = UringBackend()
    fd, _ = open_for_append(tmp_path / "a.lnc", direct=True, create=True)
    try:
        backend.write(fd, 0, [aligned(block(5))], sync=True)
        assert backend.stats["groups"] == 0                  # plain syscalls
        backend.write(fd, BLOCK, [aligned(block(6) * 32)], sync=True)
        assert backend.stats["groups"] == 1                  # a large one takes the ring
    finally:
        os.close(fd)
        backend.close()
    assert read_back(tmp_path / "a.lnc", 33 * BLOCK) == block(5) + block(6) * 32


def test_group_larger_than_the_ring_is_refused(tmp_path):
    backend = UringBackend(entries=4)
    fd, _ = open_for_append(tmp_path / "a.lnc", direct=True, create=True)
    try:
        with pytest.raises(ValueError, match="4 entries"):
            backend.submit(fd, 0, [aligned(block(i)) for i in range(4)], sync=True)
        # Groups that fit still go through, more of them than the ring has entries.
        tickets = [backend.submit(fd, i * BLOCK, [aligned(block(i))], sync=True)
                   for i in range(12)]
        assert [backend.wait(t) for t in tickets] == [BLOCK] * 12
    finally:
        os.close(fd)
        backend.close()
    assert read_back(tmp_path / "a.lnc", 12 * BLOCK) == b"".join(block(i) for i in range(12))


def test_a_kernel_refusing_rwf_dsync_gets_pwritev_then_fdatasync(tmp_path, monkeypatch):
    """Synced plain writes carry RWF_DSYNC; a kernel that rejects the flag (here: a flag bit
    no kernel defines) makes the backend fall back to fdatasync for good, losing nothing."""
    from lance_store.uring import pwritev as plain
    monkeypatch.setattr(plain, "_DSYNC_FLAGS", 1 << 30)
    synced = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(plain.os, "fdatasync", lambda fd: (synced.append(fd), real_fdatasync(fd)))
    backend = PwritevBackend()
    fd, _ = open_for_append(tmp_path / "a.lnc", direct=True, create=True)
    try:
        backend.write(fd, 0, [aligned(block(7))], sync=True)
        backend.write(fd, BLOCK, [aligned(block(8))], sync=True)
    finally:
        os.close(fd)
        backend.close()
    assert plain._DSYNC_FLAGS == 0
    assert synced == [fd, fd]
    assert read_back(tmp_path / "a.lnc", 2 * BLOCK) == block(7) + block(8)
