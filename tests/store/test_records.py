"""TLV encoding: types, extended records, limits, and the fast uniform path."""
import pytest

from lance_store.errors import InvalidRecordError
from lance_store.records import (BATCH_HEADER, EXTENDED, MAX_VALUE_LEN, PADDING, encode,
                                 encode_uniform, iter_tlv, padding)


def test_plain_and_extended_records_round_trip():
    payload, n = encode([b"a", (0x01, b"{}"), (EXTENDED, 0x1234, b"ext")])
    assert n == 3
    walked = list(iter_tlv(payload))
    assert [(t, e) for _, t, e, _, _ in walked] == [(0, 0), (1, 0), (0xFF, 0x1234)]
    assert [payload[vp:vp + ln] for _, _, _, vp, ln in walked] == [b"a", b"{}", b"ext"]


def test_uniform_path_matches_general_path():
    values = [bytes([i]) * i for i in range(50)]
    assert encode_uniform(values, 0x10) == encode([(0x10, v) for v in values])


@pytest.mark.parametrize("rtype", [PADDING, BATCH_HEADER])
def test_engine_types_are_refused(rtype):
    with pytest.raises(InvalidRecordError, match="reserved"):
        encode([(rtype, b"x")])
    with pytest.raises(InvalidRecordError, match="reserved"):
        encode_uniform([b"x"], rtype)


def test_value_limit_names_the_record():
    big = bytes(MAX_VALUE_LEN + 1)
    with pytest.raises(InvalidRecordError, match="record 1"):
        encode_uniform([b"ok", big])


def test_truncated_payload_is_reported_with_its_position():
    payload, _ = encode([b"hello", b"world"])
    with pytest.raises(InvalidRecordError, match="byte 10"):
        list(iter_tlv(payload[:-1]))


def test_padding_record_has_the_exact_size():
    assert len(padding(4096)) == 4096
    assert padding(5) == bytes([PADDING]) + bytes(4)
    with pytest.raises(ValueError):
        padding(4)


@pytest.fixture(params=["c", "python"])
def encoder(request):
    from lance_store import records
    if request.param == "c":
        if records.ENCODER != "c":
            pytest.fail("the C encoder is not built (pip install -e . builds it)")
        return records.encoded_size, records.encode_into
    return records._encoded_size_py, records._encode_into_py


def test_encode_into_matches_encode(encoder):
    size, into = encoder
    values = [b"", b"a", bytearray(b"bc"), memoryview(b"def"), bytes(300)]
    want, _ = encode([(0x10, bytes(v)) for v in values])
    assert size(values) == len(want)
    out = bytearray(len(want) + 7)
    assert into(values, 0x10, out, 7) == len(out)
    assert bytes(out[7:]) == want


def test_encode_into_refuses_what_does_not_fit(encoder):
    size, into = encoder
    with pytest.raises(BufferError, match="record 1"):
        into([b"ab", b"cd"], 0, bytearray(12), 0)
    with pytest.raises(InvalidRecordError, match="type"):
        into([b"x"], PADDING, bytearray(10), 0)
    with pytest.raises(TypeError, match="record 0"):
        into(["text"], 0, bytearray(10), 0)
    with pytest.raises(InvalidRecordError, match="record 0"):
        size([bytes(MAX_VALUE_LEN + 1)])
