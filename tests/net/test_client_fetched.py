"""Decoding fetched data: whole batches (plain and LZ4), an upstream server's plain TLV run, damage."""
import crc32c
import lz4.block
import pytest

from lance_net.client.fetched import FetchedDataError, decode
from lance_store.records import JSON, encode
from lance_store.segment.header import BATCH_OVERHEAD, FLAG_LZ4, BatchHeader, encode_batch
from lance_store.sortkey import SortKey


def _batch(values, base: int, ts: int, key: int, *, compressed: bool = False) -> bytes:
    payload, count = encode(values)
    if not compressed:
        header, _ = encode_batch(payload, count, base_offset=base, first_timestamp_ns=ts,
                                 first_key_low=key)
        return header + payload
    block = lz4.block.compress(payload, store_size=True)
    header = BatchHeader(base, ts, key, ts, count, len(block), crc32c.crc32c(block),
                         flags=FLAG_LZ4).pack()
    return header + block


def test_plain_and_compressed_batches_decode_in_offset_order():
    start = 1000
    first = _batch([b"a", (JSON, b"{}")], start, 10, 100)
    second = _batch([b"zipped-1", b"zipped-2", b"zipped-3"], start + len(first), 20, 200,
                    compressed=True)
    third = _batch([b"last"], start + len(first) + len(second), 30, 300)
    data = first + second + third
    batch = decode(memoryview(data), start, start + len(data))
    assert batch.values() == [b"a", b"{}", b"zipped-1", b"zipped-2", b"zipped-3", b"last"]
    assert batch.type.tolist() == [0, JSON, 0, 0, 0, 0]
    second_at = start + len(first)
    assert batch.offset.tolist() == [start + BATCH_OVERHEAD, start + BATCH_OVERHEAD + 6,
                                     second_at, second_at, second_at,
                                     second_at + len(second) + BATCH_OVERHEAD]
    assert [batch.sortkey(i) for i in range(6)] == [
        SortKey(10, 100), SortKey(10, 101), SortKey(20, 200), SortKey(20, 201), SortKey(20, 202),
        SortKey(30, 300)]
    assert batch.batch_start.tolist() == [start] * 2 + [second_at] * 3 + [second_at + len(second)]
    assert batch.next_offset == start + len(data)


def test_an_upstream_tlv_run_cut_by_the_fetch_limit_ends_at_the_last_whole_record():
    payload, _ = encode([b"one", b"two", b"three"])
    cut = payload[:-2]  # the fetch limit fell inside "three"
    batch = decode(cut, 500, 500 + len(cut))
    assert batch.values() == [b"one", b"two"]
    assert batch.offset.tolist() == [500, 508]
    assert batch.next_offset == 516  # "three" is fetched again, whole
    assert batch.resume_offset(1) == 508


def test_damaged_batches_raise():
    data = bytearray(_batch([b"payload"], 0, 1, 1))
    data[-1] ^= 0x01
    with pytest.raises(FetchedDataError, match="payload crc mismatch"):
        decode(bytes(data), 0, len(data))
    with pytest.raises(FetchedDataError, match="base offset mismatch"):
        good = _batch([b"payload"], 0, 1, 1)
        decode(good, 77, 77 + len(good))


def test_a_fetch_that_starts_at_padding_is_still_whole_batches():
    from lance_net.client.fetched import is_batched
    from lance_store.records import padding
    start = 8000
    pad = padding(3000)
    body = _batch([b"after-padding"], start + len(pad), 40, 400)
    data = pad + body
    assert is_batched(data) and is_batched(pad)
    batch = decode(data, start, start + len(data))
    assert batch.values() == [b"after-padding"]
    assert batch.offset.tolist() == [start + len(pad) + BATCH_OVERHEAD]
    assert not is_batched(encode([b"plain", b"upstream"])[0])
