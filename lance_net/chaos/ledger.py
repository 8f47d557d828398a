"""What a chaos record carries (run id, sequence number) and the verdict on what came back.

Owns the value layout, stamping many values at once, reading the sequences out of fetched
records, and the tally of acknowledged against consumed sequences; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lance_store.records import HEADER_LEN, RAW, encode_uniform

from lance_net.client import RecordBatch

# A value starts with the run id and its sequence number (big-endian u64 each), then padding.
SEQUENCE_HEADER = np.dtype([("run", ">u8"), ("seq", ">u8")])
SEQUENCE_HEADER_LEN = SEQUENCE_HEADER.itemsize
PAD_BYTE = 0x2E
_HEADER_BYTES = np.arange(SEQUENCE_HEADER_LEN, dtype=np.uint64)
# Listed in the verdict so a reader can go and look; the counts carry the rest.
FIRST_GAPS_SHOWN = 20


def stamp(run_id: int, first_seq: int, count: int, msg_size: int) -> bytes:
    """TLV payload of `count` RAW records of `msg_size` bytes, sequences first_seq.. in order."""
    if msg_size < SEQUENCE_HEADER_LEN:
        raise ValueError(f"msg_size: expected at least {SEQUENCE_HEADER_LEN} bytes (run id and "
                         f"sequence), found {msg_size}")
    payload, _ = encode_uniform([bytes([PAD_BYTE]) * msg_size] * count, RAW)
    rows = np.frombuffer(payload, np.uint8).copy().reshape(count, HEADER_LEN + msg_size)
    headers = np.empty(count, SEQUENCE_HEADER)
    headers["run"] = run_id
    headers["seq"] = np.arange(first_seq, first_seq + count, dtype=np.uint64)
    rows[:, HEADER_LEN:HEADER_LEN + SEQUENCE_HEADER_LEN] = headers.view(np.uint8).reshape(
        count, SEQUENCE_HEADER_LEN)
    return rows.tobytes()


def sequences_of(batch: RecordBatch, run_id: int) -> np.ndarray:
    """The sequence numbers of this run's records in a fetched batch, in offset order.

    Records of other runs (or other writers) sharing the topic are skipped.
    """
    if not len(batch):
        return np.zeros(0, np.uint64)
    candidates = np.flatnonzero((batch.type == RAW) & (batch.length >= SEQUENCE_HEADER_LEN))
    if not len(candidates):
        return np.zeros(0, np.uint64)
    data = np.frombuffer(batch.buffer, np.uint8)
    starts = batch.value_pos[candidates].astype(np.uint64)
    raw = data[starts[:, None] + _HEADER_BYTES].reshape(-1)
    headers = raw.view(SEQUENCE_HEADER)
    mine = headers["run"] == run_id
    return headers["seq"][mine].astype(np.uint64)


@dataclass(frozen=True)
class Verdict:
    """Acknowledged against consumed sequences of one run.

    gaps: acknowledged sequences never consumed (loss). duplicates: consumptions beyond the
    first of a sequence. out_of_order: first consumptions of a sequence lower than one
    consumed before it. unacked_consumed: consumed sequences whose batch was never
    acknowledged (sent when the run ended, or failed): not an error, the broker may have
    written them.
    """

    sent: int
    acknowledged: int
    consumed: int
    distinct_consumed: int
    gaps: int
    duplicates: int
    out_of_order: int
    unacked_consumed: int
    first_gaps: list[int] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return self.gaps > 0

    @property
    def ok(self) -> bool:
        return self.gaps == 0 and self.duplicates == 0


class Ledger:
    """Sequences one run handed to the producer, those acknowledged, and those consumed."""

    def __init__(self) -> None:
        self.sent = 0                             # sequences 0..sent-1 were handed over
        self._acked: list[tuple[int, int]] = []   # (first sequence, count) per acked batch
        self._consumed: list[np.ndarray] = []

    def take(self, count: int) -> int:
        """Reserve the next `count` sequences; returns the first."""
        first = self.sent
        self.sent += count
        return first

    def acknowledged(self, first_seq: int, count: int) -> None:
        self._acked.append((first_seq, count))

    def consumed(self, sequences: np.ndarray) -> None:
        if len(sequences):
            self._consumed.append(sequences)

    def acked_mask(self) -> np.ndarray:
        mask = np.zeros(self.sent, bool)
        for first, n in self._acked:
            mask[first:first + n] = True
        return mask

    def consumed_sequences(self) -> np.ndarray:
        if not self._consumed:
            return np.zeros(0, np.uint64)
        return np.concatenate(self._consumed)

    def verdict(self) -> Verdict:
        return judge(self.sent, self.acked_mask(), self.consumed_sequences())


def judge(sent: int, acked: np.ndarray, consumed: np.ndarray) -> Verdict:
    """The verdict on `consumed` (sequences in the order read) given `acked` (a mask over 0..sent-1)."""
    if len(acked) != sent:
        raise ValueError(f"acked: expected a mask of {sent} sequences, found {len(acked)}")
    consumed = consumed.astype(np.int64)
    # A sequence at or past `sent` was never handed out: count it as consumed, never as acked.
    size = max(sent, int(consumed.max()) + 1 if len(consumed) else 0)
    counts = np.bincount(consumed, minlength=size)
    acked_full = np.zeros(size, bool)
    acked_full[:sent] = acked
    missing = np.flatnonzero(acked_full & (counts == 0))
    seen = counts > 0
    _, first_index = np.unique(consumed, return_index=True)
    firsts = consumed[np.sort(first_index)]
    out_of_order = 0
    if len(firsts) > 1:
        out_of_order = int(np.count_nonzero(firsts[1:] < np.maximum.accumulate(firsts)[:-1]))
    return Verdict(
        sent=sent, acknowledged=int(np.count_nonzero(acked)), consumed=len(consumed),
        distinct_consumed=int(np.count_nonzero(seen)), gaps=len(missing),
        duplicates=int(np.maximum(counts - 1, 0).sum()), out_of_order=out_of_order,
        unacked_consumed=int(np.count_nonzero(seen & ~acked_full)),
        first_gaps=[int(s) for s in missing[:FIRST_GAPS_SHOWN]])
