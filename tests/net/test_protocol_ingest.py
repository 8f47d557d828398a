"""Ingest payload checks: exact TLV framing, no 0xFD/0xFE records, and the count the frame claims."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lance_net.protocol import InvalidBatch
from lance_net.protocol.ingest import count_records, validate_ingest
from lance_store.records import encode, iter_tlv, padding


def test_counts_plain_and_extended_records():
    payload, count = encode([b"hello", (0x01, b"{}"), (0xFF, 7, b"ext"), (0x10, b"")])
    assert count == 4
    assert count_records(payload) == 4
    assert validate_ingest(payload, 4) == 4
    assert count_records(b"") == 0


def test_a_256_kib_batch_of_1_kib_records_counts_256():
    payload, count = encode([bytes([i % 251]) * 1019 for i in range(256)])
    assert len(payload) == 256 * 1024
    assert validate_ingest(payload, 256) == 256


def test_count_mismatch_is_worded_as_the_spec_vector():
    payload, _ = encode([b"hello", b"world"])
    with pytest.raises(InvalidBatch, match="^record_count 3 but payload holds 2 records$"):
        validate_ingest(payload, 3)
    with pytest.raises(InvalidBatch, match="^record_count 1 but payload holds 2 records$"):
        validate_ingest(payload, 1)


@pytest.mark.parametrize("rtype,name", [(0xFD, "padding"), (0xFE, "batch header")])
def test_engine_record_types_are_refused_with_index_and_offset(rtype, name):
    head, _ = encode([b"a", b"bb"])
    payload = head + struct.pack("<BI", rtype, 3) + b"xyz" + encode([b"c"])[0]
    with pytest.raises(InvalidBatch) as info:
        count_records(payload)
    assert str(info.value) == (f"record 2 at byte {len(head)}: type 0x{rtype:02X} ({name}) "
                               f"is written by the broker only")


def test_padding_record_is_refused():
    with pytest.raises(InvalidBatch, match="record 0 at byte 0: type 0xFD"):
        count_records(padding(12))


def test_a_record_running_past_the_end_names_its_index_and_offset():
    payload, _ = encode([b"hello", b"world"])
    with pytest.raises(InvalidBatch) as info:
        count_records(payload[:-1])
    assert str(info.value).startswith("record 1: ")
    assert "byte 10" in str(info.value)


def test_a_torn_header_names_its_index_and_offset():
    payload, _ = encode([b"hello"])
    with pytest.raises(InvalidBatch) as info:
        count_records(payload + b"\x01\x00")
    assert str(info.value).startswith("record 1: ")
    assert "byte 10" in str(info.value)


def test_a_value_over_16_mib_is_refused():
    value_len = 16 * 1024 * 1024 + 1
    payload = struct.pack("<BI", 0, value_len) + bytes(value_len)
    with pytest.raises(InvalidBatch, match="record 0 at byte 0: value length expected at most "
                                           "16777216, found 16777217"):
        count_records(payload)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 0xFC), st.binary(max_size=64)), max_size=40))
def test_count_matches_what_was_encoded(records):
    payload, count = encode(records)
    assert count_records(payload) == count == len(records)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_either_count_or_are_refused(data):
    try:
        walked = list(iter_tlv(data))
    except ValueError:
        walked = None
    try:
        count = count_records(data)
    except InvalidBatch:
        assert walked is None or any(rtype in (0xFD, 0xFE) for _, rtype, _, _, _ in walked)
        return
    assert count == len(walked)
    assert all(rtype not in (0xFD, 0xFE) for _, rtype, _, _, _ in walked)
