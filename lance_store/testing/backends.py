"""The conformance suite every write backend passes (blocking writes, groups, errors).

A backend's test module subclasses `BackendConformance` and supplies a `backend`
fixture that yields a fresh backend; it may override `scratch_dir` to try O_DIRECT
on more filesystems. Nothing here knows which backend it is testing.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import mmap
import os
import select
import subprocess
import sys
import textwrap
import threading

import pytest

from ..segment.writer import open_for_append
from ..uring.backend import BLOCK, BufferPool

# Only guards against a hang; no assertion depends on how long anything takes.
REAP_TIMEOUT_S = 30


def aligned(data: bytes) -> memoryview:
    """`data` in page-aligned memory (an anonymous mmap), as O_DIRECT wants it."""
    buf = mmap.mmap(-1, max(len(data), 1))
    buf[: len(data)] = data
    return memoryview(buf)[: len(data)]


def block(tag: int, blocks: int = 1) -> bytes:
    """Recognisable bytes: every 4 KiB block differs by `tag` and its position."""
    return b"".join(bytes([(tag + i) % 251 + 1]) * BLOCK for i in range(blocks))


def read_back(path, length: int, offset: int = 0) -> bytes:
    """The file's bytes as another reader sees them: a separate, buffered fd."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def reap_until(backend, tickets) -> tuple[dict, list]:
    """Reap (watching the backend's fd, as an event loop would) until every ticket is back;
    returns {ticket: result} and the tickets in the order they were reaped."""
    wanted = set(tickets)
    results: dict = {}
    order: list = []
    while wanted - results.keys():
        readable, _, _ = select.select([backend.fileno()], [], [], REAP_TIMEOUT_S)
        missing = sorted(wanted - results.keys())
        assert readable, f"no completion within {REAP_TIMEOUT_S}s; waiting for {missing}"
        for ticket, result in backend.reap():
            assert ticket not in results, f"ticket {ticket} reaped twice"
            results[ticket] = result
            order.append(ticket)
    return results, order


class BackendConformance:
    """Subclass and provide `backend`."""

    @pytest.fixture
    def backend(self):
        raise NotImplementedError("a backend's test class supplies this fixture")

    @pytest.fixture
    def scratch_dir(self, tmp_path):
        return tmp_path

    @pytest.fixture
    def segment(self, tmp_path):
        """A new file opened as the segment writer opens it: (path, fd, O_DIRECT in use)."""
        path = tmp_path / "00000000000000000000_1.lnc"
        fd, direct = open_for_append(path, direct=True, create=True)
        yield path, fd, direct
        os.close(fd)

    @pytest.fixture
    def second_segment(self, tmp_path):
        path = tmp_path / "00000000000000000000_2.lnc"
        fd, direct = open_for_append(path, direct=True, create=True)
        yield path, fd, direct
        os.close(fd)

    # blocking writes ----------------------------------------------------------

    def test_aligned_writes_land_byte_exact(self, backend, segment):
        path, fd, _ = segment
        first, second = block(1, 2), block(7, 3)
        backend.write(fd, 2 * BLOCK, [aligned(first), aligned(second)], sync=True)
        assert os.fstat(fd).st_size == 7 * BLOCK
        assert read_back(path, 7 * BLOCK) == bytes(2 * BLOCK) + first + second

    def test_sync_makes_unsynced_writes_visible_elsewhere(self, backend, segment):
        path, fd, _ = segment
        data = [block(i) for i in range(5)]
        for i, chunk in enumerate(data):
            backend.write(fd, i * BLOCK, [aligned(chunk)], sync=False)
        backend.sync(fd)
        assert read_back(path, 5 * BLOCK) == b"".join(data)
        assert os.stat(path).st_size == 5 * BLOCK

    def test_later_write_replaces_earlier_bytes_of_a_block(self, backend, segment):
        path, fd, _ = segment
        backend.write(fd, 0, [aligned(block(1, 2))], sync=True)
        backend.write(fd, BLOCK, [aligned(block(9))], sync=True)
        assert read_back(path, 2 * BLOCK) == block(1) + block(9)

    def test_misaligned_write_names_einval(self, backend, segment):
        path, fd, direct = segment
        if not direct:
            # This filesystem refused O_DIRECT, so the fallback accepts any alignment.
            backend.write(fd, 100, [b"x" * 100], sync=True)
            assert read_back(path, 200) == bytes(100) + b"x" * 100
            return
        with pytest.raises(OSError) as misaligned_offset:
            backend.write(fd, 100, [aligned(block(1))], sync=True)
        with pytest.raises(OSError) as short_length:
            backend.write(fd, 0, [aligned(b"y" * 100)], sync=True)
        for caught in (misaligned_offset.value, short_length.value):
            assert caught.errno == errno.EINVAL
            assert "EINVAL" in str(caught) and "O_DIRECT" in str(caught)
        assert "offset 100" in str(misaligned_offset.value)
        assert "100 bytes" in str(short_length.value)

    def test_write_to_read_only_fd_raises(self, backend, segment):
        path, _, _ = segment
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as caught:
                backend.write(fd, 0, [aligned(block(1))], sync=True)
        finally:
            os.close(fd)
        assert caught.value.errno == errno.EBADF
        assert "EBADF" in str(caught.value)
        assert os.stat(path).st_size == 0

    def test_o_direct_file_works(self, backend, scratch_dir):
        path = scratch_dir / "00000000000000000000_3.lnc"
        fd, direct = open_for_append(path, direct=True, create=True)
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            assert bool(flags & os.O_DIRECT) == direct
            data = block(3, 4)
            backend.write(fd, 0, [aligned(data[: 2 * BLOCK]), aligned(data[2 * BLOCK:])], sync=True)
            backend.write(fd, 4 * BLOCK, [aligned(block(11))], sync=True)
        finally:
            os.close(fd)
        assert read_back(path, 5 * BLOCK) == data + block(11)

    def test_pool_buffers_work_registered_or_not(self, backend, segment):
        path, fd, _ = segment
        pool = BufferPool(2, 16 * BLOCK)
        registered = backend.register_buffers(pool)
        assert isinstance(registered, bool)
        buf = pool.take()
        try:
            buf[: 3 * BLOCK] = block(5, 3)
            backend.write(fd, 0, [memoryview(buf)[: 3 * BLOCK]], sync=True)
            # A view of a registered buffer that starts mid-buffer, and plain memory after it.
            backend.write(fd, 3 * BLOCK, [memoryview(buf)[BLOCK: 2 * BLOCK], aligned(block(8))],
                          sync=True)
        finally:
            pool.give(buf)
        assert read_back(path, 5 * BLOCK) == block(5, 3) + block(6) + block(8)

    def test_threads_share_one_backend(self, backend, tmp_path):
        def writer(n: int, fd: int) -> None:
            for i in range(20):
                backend.write(fd, i * BLOCK, [aligned(block(n * 20 + i))], sync=i % 5 == 4)

        fds = [open_for_append(tmp_path / f"{n:020d}_1.lnc", direct=True, create=True)[0]
               for n in range(4)]
        threads = [threading.Thread(target=writer, args=(n, fd)) for n, fd in enumerate(fds)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for fd in fds:
            os.close(fd)
        for n in range(4):
            expected = b"".join(block(n * 20 + i) for i in range(20))
            assert read_back(tmp_path / f"{n:020d}_1.lnc", 20 * BLOCK) == expected

    # groups -------------------------------------------------------------------

    def test_hundred_groups_come_back_in_submission_order_per_file(self, backend, segment,
                                                                  second_segment):
        files = [segment, second_segment]
        submitted: dict[int, list] = {0: [], 1: []}
        keep = []
        for i in range(100):
            which = i % 2
            _, fd, _ = files[which]
            view = aligned(block(i))
            keep.append(view)
            position = len(submitted[which])
            submitted[which].append(backend.submit(fd, position * BLOCK, [view], sync=i % 10 == 9))
        results, order = reap_until(backend, submitted[0] + submitted[1])
        for which in (0, 1):
            tickets = submitted[which]
            assert [t for t in order if t in tickets] == tickets
            assert all(results[t] == BLOCK for t in tickets)
        for which in (0, 1):
            backend.sync(files[which][1])
            expected = b"".join(block(i) for i in range(which, 100, 2))
            assert read_back(files[which][0], 50 * BLOCK) == expected

    def test_two_groups_in_flight(self, backend, segment):
        path, fd, _ = segment
        first, second = aligned(block(1, 2)), aligned(block(3, 2))
        t1 = backend.submit(fd, 0, [first], sync=True)
        t2 = backend.submit(fd, 2 * BLOCK, [second], sync=True)
        assert t1 != t2
        results, order = reap_until(backend, [t1, t2])
        assert results[t1] == results[t2] == 2 * BLOCK
        assert order == [t1, t2]
        assert read_back(path, 4 * BLOCK) == block(1, 2) + block(3, 2)

    def test_overlapping_groups_reach_the_disk_in_submission_order(self, backend, segment):
        # The segment writer rewrites its partial last block with every group: the
        # later group's copy of that block must be the one that stays.
        path, fd, _ = segment
        views = [aligned(block(i, 2)) for i in range(30)]
        tickets = [backend.submit(fd, (i // 3) * BLOCK, [v], sync=False)
                   for i, v in enumerate(views)]
        tickets.append(backend.submit(fd, 0, [], sync=True))
        results, order = reap_until(backend, tickets)
        assert order == tickets
        assert results[tickets[-1]] == 0
        expected = bytearray(11 * BLOCK)
        for i in range(30):
            start = (i // 3) * BLOCK
            expected[start: start + 2 * BLOCK] = block(i, 2)
        assert read_back(path, 11 * BLOCK) == bytes(expected)

    def test_fd_turns_readable_when_a_group_completes(self, backend, segment):
        _, fd, _ = segment
        ticket = backend.submit(fd, 0, [aligned(block(2))], sync=True)
        readable, _, _ = select.select([backend.fileno()], [], [], REAP_TIMEOUT_S)
        assert readable == [backend.fileno()]
        assert backend.eventfd == backend.fileno()
        assert reap_until(backend, [ticket])[0][ticket] == BLOCK

    def test_asyncio_loop_drives_groups(self, backend, segment):
        path, fd, _ = segment

        async def main():
            loop = asyncio.get_running_loop()
            pending: dict = {}

            def on_completions():
                for ticket, result in backend.reap():
                    future = pending.pop(ticket)
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

            loop.add_reader(backend.fileno(), on_completions)
            try:
                views = [aligned(block(i)) for i in range(10)]
                futures = []
                for i, view in enumerate(views):
                    future = loop.create_future()
                    pending[backend.submit(fd, i * BLOCK, [view], sync=True)] = future
                    futures.append(future)
                return await asyncio.wait_for(asyncio.gather(*futures), REAP_TIMEOUT_S)
            finally:
                loop.remove_reader(backend.fileno())

        assert asyncio.run(main()) == [BLOCK] * 10
        assert read_back(path, 10 * BLOCK) == b"".join(block(i) for i in range(10))

    def test_failed_group_is_reported_with_its_errno(self, backend, segment):
        path, fd, _ = segment
        read_only = os.open(path, os.O_RDONLY)
        try:
            bad = backend.submit(read_only, 0, [aligned(block(1))], sync=True)
            good = backend.submit(fd, 0, [aligned(block(2))], sync=True)
            results, order = reap_until(backend, [bad, good])
        finally:
            os.close(read_only)
        assert isinstance(results[bad], OSError)
        assert results[bad].errno == errno.EBADF and "EBADF" in str(results[bad])
        assert results[good] == BLOCK
        assert read_back(path, BLOCK) == block(2)

    def test_wait_returns_bytes_or_raises(self, backend, segment):
        path, fd, _ = segment
        ticket = backend.submit(fd, 0, [aligned(block(4, 2))], sync=True)
        assert backend.wait(ticket) == 2 * BLOCK
        read_only = os.open(path, os.O_RDONLY)
        try:
            bad = backend.submit(read_only, 0, [aligned(block(1))], sync=False)
            with pytest.raises(OSError) as caught:
                backend.wait(bad)
        finally:
            os.close(read_only)
        assert caught.value.errno == errno.EBADF
        # A waited-for ticket is not handed to reap() as well.
        assert backend.reap() == []

    def test_wait_after_completion_and_unknown_tickets(self, backend, segment):
        _, fd, _ = segment
        ticket = backend.submit(fd, 0, [aligned(block(4))], sync=True)
        select.select([backend.fileno()], [], [], REAP_TIMEOUT_S)
        assert backend.wait(ticket) == BLOCK
        with pytest.raises(ValueError, match="ticket"):
            backend.wait(ticket)

    def test_blocking_write_while_groups_are_in_flight(self, backend, segment, second_segment):
        path, fd, _ = segment
        other_path, other_fd, _ = second_segment
        tickets = [backend.submit(fd, i * BLOCK, [aligned(block(i))], sync=True) for i in range(4)]
        backend.write(other_fd, 0, [aligned(block(40))], sync=True)
        backend.write(fd, 4 * BLOCK, [aligned(block(4))], sync=True)
        results, order = reap_until(backend, tickets)
        assert order == tickets
        assert read_back(path, 5 * BLOCK) == b"".join(block(i) for i in range(5))
        assert read_back(other_path, BLOCK) == block(40)

    def test_reaping_thread_and_blocking_threads_together(self, backend, tmp_path):
        """An event loop reaps its groups while other threads write and wait: neither
        side may take the other's results or sleep through its own."""
        paths = [tmp_path / f"{n:020d}_1.lnc" for n in range(4)]
        fds = [open_for_append(p, direct=True, create=True)[0] for p in paths]
        failures: list = []

        def blocking(n: int) -> None:
            try:
                for i in range(40):
                    backend.write(fds[n], i * BLOCK, [aligned(block(n * 40 + i))], sync=i % 4 == 0)
            except BaseException as exc:  # reported below, in the test's thread
                failures.append(exc)

        views = [aligned(block(200 + i)) for i in range(60)]
        threads = [threading.Thread(target=blocking, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        tickets = [backend.submit(fds[3], i * BLOCK, [v], sync=i % 2 == 0)
                   for i, v in enumerate(views)]
        results, order = reap_until(backend, tickets)
        for t in threads:
            t.join()
        for fd in fds:
            os.close(fd)
        assert failures == []
        assert order == tickets and all(results[t] == BLOCK for t in tickets)
        for n in range(3):
            expected = b"".join(block(n * 40 + i) for i in range(40))
            assert read_back(paths[n], 40 * BLOCK) == expected
        assert read_back(paths[3], 60 * BLOCK) == b"".join(block(200 + i) for i in range(60))

    def test_close_finishes_groups_in_flight(self, backend, segment):
        path, fd, _ = segment
        for i in range(8):
            backend.submit(fd, i * BLOCK, [aligned(block(i))], sync=i == 7)
        backend.close()
        assert read_back(path, 8 * BLOCK) == b"".join(block(i) for i in range(8))
        with pytest.raises(ValueError, match="closed"):
            backend.submit(fd, 0, [aligned(block(1))], sync=True)

    # errors from the kernel ------------------------------------------------

    def test_kernel_error_surfaces_with_errno(self, backend, tmp_path):
        """A file size limit makes the kernel refuse (EFBIG) without filling a disk; a
        full disk (ENOSPC) takes the same path."""
        script = textwrap.dedent(f"""
            import errno, json, mmap, os, resource, signal
            from lance_store.segment.writer import open_for_append
            from lance_store.uring import select_backend

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
            backend = select_backend({backend.name!r})
            fd, _ = open_for_append({str(tmp_path / "big.lnc")!r}, direct=True, create=True)
            buf = mmap.mmap(-1, 8192)
            buf[:] = b"z" * 8192
            out = {{"backend": backend.name}}

            def attempt(name, call):
                try:
                    call()
                    out[name] = None
                except OSError as exc:
                    out[name] = [exc.errno, str(exc)]

            attempt("beyond", lambda: backend.write(fd, 2 << 20, [buf], sync=True))
            attempt("across", lambda: backend.write(fd, (1 << 20) - 4096, [buf], sync=True))
            attempt("wait", lambda: backend.wait(backend.submit(fd, 3 << 20, [buf], sync=True)))
            ticket = backend.submit(fd, 4 << 20, [buf], sync=False)
            reaped = []
            while not reaped:
                import select
                select.select([backend.fileno()], [], [], 30)
                reaped = backend.reap()
            out["reaped"] = [reaped[0][0] == ticket, reaped[0][1].errno, str(reaped[0][1])]
            out["size"] = os.fstat(fd).st_size
            backend.close()
            print(json.dumps(out))
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["backend"] == backend.name
        for name in ("beyond", "across", "wait"):
            assert out[name] is not None, f"{name}: the write past the limit succeeded"
            code, message = out[name]
            assert code == errno.EFBIG, f"{name}: {message}"
            assert "EFBIG" in message
        assert out["reaped"][0] is True
        assert out["reaped"][1] == errno.EFBIG and "EFBIG" in out["reaped"][2]
        # The write across the limit landed what fitted before the kernel refused.
        assert out["size"] == 1 << 20
