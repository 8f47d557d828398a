"""The group-filling kernel: the C build and its Python twin write the same bytes,
stamp the same keys, and leave the queue whole when they fail."""
from collections import deque

import pytest

from lance_store import groupfill, scanner
from lance_store.records import RAW, encode
from lance_store.segment.header import BATCH_OVERHEAD, BatchHeader
from lance_store.sortkey import pack_low
from lance_store.topic import AppendResult

from lance_store._native._encode import fill_group as c_fill_group

# Both kernels, whatever LANCE_NO_EXTENSIONS picked for the store.
KERNELS = [pytest.param(groupfill.fill_group_py, id="python"), pytest.param(c_fill_group, id="c")]


def queued(values=None, payload=None, count=None, ts=None, pid=0, pseq=0):
    if payload is not None:
        return groupfill.Queued(len(payload), f"future-{pid}-{pseq}", payload, -1, count, ts, pid, pseq)
    size = len(encode(values, RAW)[0])
    return groupfill.Queued(size, f"future-{pid}-{pseq}", values, RAW, len(values), ts, pid, pseq)


def sample_queue():
    return deque([
        queued([b"a" * 10, b"bb"]),
        queued(payload=encode([b"x" * 100], RAW)[0], count=1, ts=5, pid=7, pseq=1),
        queued([b""] * 3, pid=7, pseq=2),
        queued([bytes(range(256))] * 4, ts=10**18),
    ])


def run(kernel, queue, *, size=1 << 16, fill=0, cursor=4096, limit=1 << 40, last_ns=100):
    buf = bytearray(size)
    producers = {}
    out = kernel(queue, buf, fill, cursor, limit, 1000, last_ns, 42, pack_low(3, 1, 0), producers,
                 AppendResult)
    return buf, producers, out


@pytest.mark.parametrize("kernel", KERNELS)
def test_batches_are_valid_and_stamped_by_the_clock_rule(kernel):
    queue = sample_queue()
    buf, producers, (fill, cursor, last_ns, seq, pending, waiters) = run(kernel, queue)
    assert not queue
    scan = scanner.scan_batches(bytes(buf[:fill]), 4096)
    assert scan.error is None and scan.valid_end == fill
    assert list(scan.base_offset) == [p[0] for p in pending]
    # wall 1000 > last 100; then an explicit 5 may not go back: last + 1; then 1002;
    # then an explicit timestamp far ahead is kept.
    assert [p[1] for p in pending] == [1000, 1001, 1002, 10**18]
    assert [p[2] & ((1 << 40) - 1) for p in pending] == [42, 44, 45, 48]
    assert all(p[2] >> 40 == (3 << 8 | 1) for p in pending)
    assert (last_ns, seq) == (10**18, 52)
    assert cursor == 4096 + fill
    assert producers == {7: (2, pending[2][0])}
    assert [w[0] for w in waiters] == ["future-0-0", "future-7-1", "future-7-2", "future-0-0"]
    assert waiters[1][1] == AppendResult(pending[1][0], pending[2][0], 1, 1001, pending[1][2])
    hdr = BatchHeader.unpack(buf, pending[1][0] - 4096)
    assert (hdr.producer_id, hdr.producer_seq, hdr.record_count) == (7, 1, 1)


def test_the_c_kernel_writes_what_the_python_twin_writes():
    a = run(groupfill.fill_group_py, sample_queue(), fill=300, cursor=1 << 33)
    b = run(c_fill_group, sample_queue(), fill=300, cursor=1 << 33)
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert a[2] == b[2]


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_group_stops_where_the_buffer_or_the_segment_ends(kernel):
    queue = deque([queued([b"v" * 1000]) for _ in range(5)])
    per = BATCH_OVERHEAD + 1005
    _, _, (fill, _, _, _, pending, _) = run(kernel, queue, size=3 * per + 10)
    assert len(pending) == 3 and len(queue) == 2 and fill == 3 * per
    queue = deque([queued([b"v" * 1000]) for _ in range(5)])
    _, _, (_, cursor, _, _, pending, _) = run(kernel, queue, cursor=0, limit=2 * per + 1)
    assert len(pending) == 2 and cursor == 2 * per and len(queue) == 3


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_first_batch_that_does_not_fit_is_an_error(kernel):
    queue = deque([queued([b"v" * 5000])])
    with pytest.raises(BufferError, match="does not fit"):
        run(kernel, queue, size=4096)
    assert len(queue) == 1


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_failing_group_leaves_every_batch_queued(kernel):
    bad = groupfill.Queued(10, "f", b"short", -1, 1, None, 0, 0)   # size disagrees with payload
    queue = deque([queued([b"ok"]), bad, queued([b"later"])])
    with pytest.raises(ValueError, match="size says|records do not take|payload of"):
        run(kernel, queue)
    assert len(queue) == 3
