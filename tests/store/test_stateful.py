"""A stateful test of one topic's log on a real data directory: appends, seals,
retention, reopens and crashes, checked against a model of the acknowledged batches."""
from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import lance_store
from lance_store import StoreConfig
from lance_store.records import encode
from lance_store.segment import naming
from lance_store.segment.header import BATCH_OVERHEAD, encode_batch

TS = 1_700_000_000_000_000_000
CONFIG = StoreConfig(segment_max_bytes=8192)

settings.register_profile(
    "log-machine", max_examples=30, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VALUES = st.lists(st.binary(max_size=300), min_size=1, max_size=6)
STAMPS = st.none() | st.integers(0, 10_000).map(lambda d: TS + d)
CRASHES = ("cut", "garbage", "partial batch", "bit flip")


class LogMachine(RuleBasedStateMachine):
    """The model: every acknowledged batch (offset, end, ts, key_low, values) that
    retention has not removed, the high watermark and the low watermark."""

    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="lance-log-machine-")
        self.path = os.path.join(self.root, "data")
        self.store = lance_store.open(self.path, create=True, node_id=1, config=CONFIG)
        self.topic = self.store.create_topic("log")
        self.batches: list[tuple[int, int, int, int, list[bytes]]] = []
        self.high = 0
        self.low = 0

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- acknowledged writes ---------------------------------------------------------

    def _acknowledged(self, result, values: list[bytes]) -> None:
        assert result.offset == self.high, "an append must start at the high watermark"
        assert result.next_offset == result.offset + BATCH_OVERHEAD + len(encode(values)[0])
        if self.batches:
            _, _, ts, key, prev = self.batches[-1]
            assert (result.timestamp_ns, result.first_key_low) > (ts, key + len(prev) - 1), \
                "SortKeys must increase, across reopens and crashes too"
        self.batches.append((result.offset, result.next_offset, result.timestamp_ns,
                             result.first_key_low, values))
        self.high = result.next_offset

    @rule(values=VALUES, stamp=STAMPS)
    def append(self, values, stamp):
        self._acknowledged(self.topic.append(values, timestamp_ns=stamp), values)

    @rule(groups=st.lists(VALUES, min_size=1, max_size=4))
    def append_many(self, groups):
        for result, values in zip(self.topic.append_many(groups), groups, strict=True):
            self._acknowledged(result, values)

    @rule()
    def seal_active(self):
        sealed = self.topic.seal_active()
        active = self.topic.segments[-1]
        assert (active.name.base, active.size) == (self.high, 0)
        if sealed is not None:
            assert sealed.sealed and sealed.end == self.high

    @rule(max_bytes=st.integers(1, 24_000))
    def apply_retention(self, max_bytes):
        self.topic.set_retention(max_bytes=max_bytes)
        removed = len(self.topic.apply_retention())
        event(f"retention removed {removed if removed < 2 else '2+'} segments")
        low = self.topic.low_watermark
        assert low >= self.low
        assert low == self.high or low in {b[0] for b in self.batches}, f"low {low} is not a batch start"
        assert self.high - low <= max_bytes or len(self.topic.segments) == 1
        self.batches = [b for b in self.batches if b[0] >= low]
        self.low = low

    # -- restarts --------------------------------------------------------------------

    def _reopen(self) -> None:
        self.store = lance_store.open(self.path, config=CONFIG)
        self.topic = self.store.topic("log")

    @rule()
    def reopen(self):
        self.store.close()
        self._reopen()

    @rule(kind=st.sampled_from(CRASHES), data=st.data())
    def crash(self, kind, data):
        """Stop without sealing, damage the active segment past the acknowledged end
        the way a crash in the middle of a write can, and recover."""
        self.store.close()
        folder = os.path.join(self.path, "segments", "log")
        (active,) = [n for n in map(naming.parse, os.listdir(folder)) if n is not None and not n.sealed]
        path = os.path.join(folder, active.filename)
        acked = self.high - active.base
        size = os.path.getsize(path)
        assert size >= acked
        with open(path, "r+b") as f:
            if kind == "cut":
                f.truncate(data.draw(st.integers(acked, max(acked, size)), label="cut at"))
            elif kind == "garbage":
                f.seek(acked)
                f.write(data.draw(st.binary(min_size=1, max_size=600), label="garbage"))
            elif kind == "partial batch":
                # Values end in a non-zero byte: the zeros past the cut must not complete the batch.
                payload, count = encode([v + b"!" for v in data.draw(VALUES, label="unacknowledged")])
                header, _ = encode_batch(payload, count, base_offset=self.high,
                                         first_timestamp_ns=TS, first_key_low=1 << 48)
                whole = header + payload
                f.seek(acked)
                f.write(whole[:data.draw(st.integers(1, len(whole) - 1), label="bytes written")])
            elif size > acked:
                pos = data.draw(st.integers(acked, size - 1), label="flipped byte")
                f.seek(pos)
                byte = f.read(1)[0]
                f.seek(pos)
                f.write(bytes([byte ^ (1 << data.draw(st.integers(0, 7), label="bit"))]))
        self._reopen()
        assert self.topic.high_watermark == self.high, "an unacknowledged byte became visible"

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def read_from_a_batch_start(self, data):
        offset, end, *_ = data.draw(st.sampled_from(self.batches), label="batch")
        batches, nxt = self.topic.read(offset, max_bytes=1)
        assert [(b.offset, len(b.data)) for b in batches] == [(offset, end - offset)] and nxt == end

    # -- what must always hold -------------------------------------------------------

    @invariant()
    def watermarks_match_the_acknowledged_batches(self):
        count = len(self.topic.segments)
        event(f"segments in the topic: {count if count < 4 else '4+'}")
        assert self.topic.high_watermark == self.high
        assert self.topic.low_watermark == self.low
        assert self.low == self.topic.segments[0].name.base
        assert self.low == self.high or self.low == self.batches[0][0]

    @invariant()
    def every_acknowledged_record_reads_back_unchanged(self):
        expected = []
        for offset, _end, ts, key, values in self.batches:
            pos = offset + BATCH_OVERHEAD
            for i, value in enumerate(values):
                expected.append((pos, ts, key + i, value))
                pos += 5 + len(value)
        got = [(r.offset, r.sortkey.timestamp_ns, r.sortkey.low, r.value) for r in self.topic.records()]
        assert got == expected

    @invariant()
    def every_acknowledged_batch_reads_back_whole(self):
        got, offset = [], self.low
        while offset < self.high:
            batches, offset = self.topic.read(offset, max_bytes=4096)
            assert batches, f"read() at {offset} returned nothing below the high watermark {self.high}"
            got += [(b.offset, b.header.record_count, bytes(b.payload)) for b in batches]
        assert offset == self.high
        assert got == [(b[0], len(b[4]), encode(b[4])[0]) for b in self.batches]


TestLog = LogMachine.TestCase
TestLog.settings = settings.get_profile("log-machine")
