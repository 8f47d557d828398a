"""SIGKILL of a real writer process in the middle of appends and seals: every batch it
acknowledged survives exactly once, in order, and nothing half-written follows."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

import lance_store
from lance_store import StoreConfig
from lance_store.segment.header import BATCH_OVERHEAD
from lance_store.verify import DAMAGE, verify_path

PRODUCER = 7
SEGMENT_MAX_BYTES = 4096      # a rotation every few dozen batches

# Appends numbered batches (producer_seq = number) and prints "ack <offset> <end> <number>"
# once each is durable; before an explicit seal it prints "seal <number>".
WRITER = r"""
import sys
import lance_store
from lance_store import StoreConfig

path, number, seal_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = lance_store.open(path, create=True, node_id=1, config=StoreConfig(segment_max_bytes=%d))
topic = store.create_topic("numbers", exist_ok=True)
print("ready", topic.high_watermark, flush=True)
while True:
    values = [b"batch %%d record %%d" %% (number, k) for k in range(1 + number %% 4)]
    r = topic.append(values, producer_id=%d, producer_seq=number)
    print("ack", r.offset, r.next_offset, number, flush=True)
    number += 1
    if number %% seal_every == 0:
        print("seal", number, flush=True)
        topic.seal_active()
""" % (SEGMENT_MAX_BYTES, PRODUCER)


def batch_values(number: int) -> list[bytes]:
    return [b"batch %d record %d" % (number, k) for k in range(1 + number % 4)]


class Writer:
    """One run of the writer process, killed by the test."""

    def __init__(self, path, number: int, seal_every: int):
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(number), str(seal_every)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.acks: list[tuple[int, int, int]] = []
        first = self._line()
        assert first.startswith("ready"), f"writer did not start: {first!r} {self.proc.stderr.read()}"
        self.started_at = int(first.split()[1])

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise AssertionError(f"writer exited ({self.proc.returncode}): {self.proc.stderr.read()}")
        return line

    def _take(self, line: str) -> None:
        if line.startswith("ack") and line.endswith("\n"):
            _, offset, end, number = line.split()
            self.acks.append((int(offset), int(end), int(number)))

    def run_until(self, acks: int, *, on_seal: bool) -> None:
        """Read acknowledgements until ACKS of them arrived (and, with ON_SEAL, the
        next seal started)."""
        while True:
            line = self._line()
            self._take(line)
            if len(self.acks) >= acks and (not on_seal or line.startswith("seal")):
                return

    def kill(self, pause: float) -> None:
        time.sleep(pause)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        # Lines printed before the kill are acknowledgements too (read through the
        # same buffered reader as the earlier ones); a torn last line is not.
        for line in self.proc.stdout.read().splitlines(keepends=True):
            self._take(line)
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert self.proc.returncode == -signal.SIGKILL


def batches_on_disk(path) -> tuple[list[tuple[int, int, int, int]], int, int | None, list]:
    """Every batch a read-only opener sees: (offset, end, producer_seq, record_count),
    the high watermark, the producer's last seq, and every record."""
    with lance_store.open(path, readonly=True) as store:
        topic = store.topic("numbers")
        out, offset = [], topic.low_watermark
        while offset < topic.high_watermark:
            batches, offset = topic.read(offset)
            assert batches
            out += [(b.offset, b.offset + len(b.data), b.header.producer_seq, b.header.record_count)
                    for b in batches]
        records = [(r.offset, r.value) for r in topic.records()]
        return out, topic.high_watermark, topic.producer_last_seq(PRODUCER), records


def expected_records(batches) -> list[tuple[int, bytes]]:
    out = []
    for offset, _end, number, _count in batches:
        pos = offset + BATCH_OVERHEAD
        for value in batch_values(number):
            out.append((pos, value))
            pos += 5 + len(value)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_never_loses_an_acknowledged_batch(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "data"
    acked: list[tuple[int, int, int]] = []       # every acknowledgement of every run
    durable: list[tuple[int, int, int, int]] = []
    for kill in range(5):
        on_seal = kill % 2 == 1
        writer = Writer(path, len(durable), seal_every=rng.randint(7, 40))
        assert writer.started_at == (durable[-1][1] if durable else 0)
        writer.run_until(rng.randint(5, 90), on_seal=on_seal)
        writer.kill(rng.uniform(0, 0.004))
        acked += writer.acks
        context = f"seed {seed}, kill {kill} ({'during a seal' if on_seal else 'during appends'})"

        found, high, last_seq, records = batches_on_disk(path)
        numbers = [b[2] for b in found]
        assert numbers == list(range(len(found))), f"{context}: batches missing, repeated or out of order"
        assert found[:len(durable)] == durable, f"{context}: an earlier batch changed"
        by_number = {b[2]: b[:2] for b in found}
        for offset, end, number in acked:
            assert by_number.get(number) == (offset, end), f"{context}: acknowledged batch {number} lost"
        # At most the batch in flight when the kill came may be durable without its ack.
        assert len(found) - (acked[-1][2] + 1) in (0, 1), context
        assert [b[3] for b in found] == [len(batch_values(n)) for n in numbers], context
        assert high == found[-1][1] and last_seq == found[-1][2], context
        assert records == expected_records(found), context
        report = verify_path(path)
        assert not [f for f in report.findings if f.severity == DAMAGE], f"{context}: {report.findings}"
        durable = found

    # The last recovery happens in a writable open: afterwards nothing is left to cut.
    with lance_store.open(path, config=StoreConfig(segment_max_bytes=SEGMENT_MAX_BYTES)) as store:
        assert store.topic("numbers").high_watermark == durable[-1][1]
    report = verify_path(path)
    assert report.findings == [], report.findings
    assert sum(t.records for t in report.topics) == sum(b[3] for b in durable)
