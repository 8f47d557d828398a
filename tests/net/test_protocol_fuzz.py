"""Hostile input: whatever bytes arrive, a Connection yields events, NEED_DATA or a ProtocolError.

Never another exception, never a hang, and after a ProtocolError nothing but that error.
"""
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lance_net.protocol import (
    DEFAULT_MAX_PAYLOAD_SIZE, HEADER_SIZE, NEED_DATA, BadMagic, Connection, ConnectionClosed,
    ConnectionStateError, CreateTopic, Dialect, Fetch, FetchResponse, HeaderChecksumMismatch,
    Ingest, Keepalive, PayloadChecksumMismatch, PayloadTooLarge, ProtocolError, Role,
    TruncatedFrame, UnsupportedVersion,
)
from lance_net.protocol.frames import FLAG_KEEPALIVE, encode_frame

SAMPLE_FRAMES = [
    Connection(Role.CLIENT).send(CreateTopic("orders")),
    Connection(Role.CLIENT).send(Fetch(5, 1024, 32768, max_wait_ms=9)),
    Connection(Role.CLIENT).send(Ingest(7, 2, 1, b"\x01\x03\x00\x00\x00abc")),
    Connection(Role.SERVER, Dialect.IEEE).send(FetchResponse(97, 1, b"\x00" * 97)),
]


def receiver_for(frame):
    """The connection that receives a sample: the last one is an ieee server's reply."""
    if frame is SAMPLE_FRAMES[-1]:
        return Connection(Role.CLIENT, Dialect.IEEE)
    return Connection(Role.SERVER)


def drain(conn, limit=100_000):
    """Every event until NEED_DATA, then NEED_DATA; or the ProtocolError. Bounded by `limit`."""
    events = []
    for _ in range(limit):
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            return events, exc
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return events, event
        events.append(event)
    raise AssertionError(f"next_event() produced {limit} events without NEED_DATA")


def feed(conn, data, chunk):
    """Pushes data in chunks, draining after each; stops at the first ProtocolError."""
    events = []
    for at in range(0, len(data), chunk):
        conn.receive_data(data[at:at + chunk])
        got, outcome = drain(conn)
        events += got
        if isinstance(outcome, ProtocolError):
            return events, outcome
    return events, NEED_DATA


def assert_dead(conn, error):
    with pytest.raises(type(error)) as again:
        conn.next_event()
    assert again.value is error
    with pytest.raises(type(error)):
        conn.receive_data(b"LANC")
    assert conn.failed is error


def header(flags=0, payload_length=0, *, version=1, reserved=0, dialect=Dialect.CRC32C,
           batch_id=0, payload_crc=0):
    prefix = struct.pack("<4sBBH", b"LANC", version, flags, reserved)
    return prefix + struct.pack("<IQQIIII", dialect.checksum(prefix), batch_id, 0, 0,
                                payload_length, payload_crc, 0)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000), chunk=st.integers(1, 300),
       role=st.sampled_from(list(Role)))
def test_random_bytes_end_in_need_data_or_protocol_error(data, chunk, role):
    conn = Connection(role)
    _, outcome = feed(conn, data, chunk)
    if isinstance(outcome, ProtocolError):
        assert_dead(conn, outcome)
    else:
        assert outcome is NEED_DATA


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tail=st.binary(max_size=600), flags=st.integers(0, 255),
       fields=st.tuples(*[st.integers(0, 2**64 - 1)] * 2, *[st.integers(0, 2**32 - 1)] * 2),
       role=st.sampled_from(list(Role)), dialect=st.sampled_from(list(Dialect)))
def test_any_frame_with_good_checksums_decodes_to_an_event(tail, flags, fields, role, dialect):
    batch_id, timestamp_ns, record_count, topic_id = fields
    frame = encode_frame(dialect, flags, tail, batch_id=batch_id, timestamp_ns=timestamp_ns,
                         record_count=record_count, topic_id=topic_id)
    conn = Connection(role, None if role is Role.SERVER else dialect)
    conn.receive_data(frame)
    event = conn.next_event()
    assert event is not NEED_DATA
    assert conn.next_event() is NEED_DATA


@pytest.mark.parametrize("frame", SAMPLE_FRAMES)
def test_truncated_frames_fed_byte_by_byte_wait_then_fail_at_end_of_stream(frame):
    for cut in range(len(frame)):
        conn = receiver_for(frame)
        for byte in frame[:cut]:
            conn.receive_data(bytes([byte]))
            assert conn.next_event() is NEED_DATA
        conn.receive_data(b"")
        if cut == 0:
            assert conn.next_event() == ConnectionClosed()
            continue
        with pytest.raises(TruncatedFrame) as info:
            conn.next_event()
        assert info.value.have == cut
        assert info.value.reason == "truncated"
        assert_dead(conn, info.value)


@pytest.mark.parametrize("frame", SAMPLE_FRAMES)
def test_every_single_bit_flip_is_caught_or_decodes_harmlessly(frame):
    for bit in range(len(frame) * 8):
        damaged = bytearray(frame)
        damaged[bit // 8] ^= 1 << (bit % 8)
        conn = receiver_for(frame)
        conn.receive_data(bytes(damaged))
        conn.receive_data(b"")
        events, outcome = drain(conn)
        at = bit // 8
        if at < 12 or at >= HEADER_SIZE or 36 <= at < 40:
            # Covered by the header CRC or the payload CRC (LWP.md section 1).
            assert isinstance(outcome, ProtocolError), (bit, events)
        else:
            # Bytes 12..35 and 40..43 are not covered: such a flip may pass unnoticed.
            assert isinstance(outcome, (ProtocolError, ConnectionClosed))


def test_flipped_magic_version_and_crc_give_their_reasons():
    conn = Connection(Role.SERVER)
    conn.receive_data(b"LANX" + header(FLAG_KEEPALIVE)[4:])
    with pytest.raises(BadMagic):
        conn.next_event()
    conn = Connection(Role.SERVER)
    conn.receive_data(header(FLAG_KEEPALIVE, version=2))
    with pytest.raises(UnsupportedVersion, match="version: expected 1, found 2"):
        conn.next_event()
    damaged = bytearray(header(FLAG_KEEPALIVE))
    damaged[5] ^= 0x01
    conn = Connection(Role.SERVER)
    conn.receive_data(bytes(damaged))
    with pytest.raises(HeaderChecksumMismatch):
        conn.next_event()


def test_wrong_payload_checksum_is_fatal():
    frame = bytearray(SAMPLE_FRAMES[0])
    frame[-1] ^= 0x40
    conn = Connection(Role.SERVER)
    conn.receive_data(bytes(frame))
    with pytest.raises(PayloadChecksumMismatch) as info:
        conn.next_event()
    assert_dead(conn, info.value)


@pytest.mark.parametrize("length", [DEFAULT_MAX_PAYLOAD_SIZE + 1, 2**31, 2**32 - 1])
@pytest.mark.parametrize("dialect", list(Dialect))
def test_huge_payload_length_fails_on_the_header_alone(length, dialect):
    conn = Connection(Role.SERVER)
    conn.receive_data(header(0x04, length, dialect=dialect))
    with pytest.raises(PayloadTooLarge) as info:
        conn.next_event()
    assert info.value.length == length
    assert info.value.limit == DEFAULT_MAX_PAYLOAD_SIZE
    assert info.value.reason == "payload_too_large"
    with pytest.raises(ConnectionStateError, match="failed connection"):
        conn.send(Keepalive())


def test_a_payload_at_the_limit_is_accepted():
    conn = Connection(Role.SERVER, max_payload_size=1000)
    conn.receive_data(encode_frame(Dialect.CRC32C, 0x04, b"\x00" * 1000, record_count=1))
    assert conn.next_event().payload == b"\x00" * 1000


def test_many_frames_in_one_chunk_are_consumed_in_linear_time():
    # 50,000 frames in one buffer: re-slicing the buffer per frame would copy
    # about 55 GB here and never finish inside the test timeout.
    keepalive = Connection(Role.CLIENT).send(Keepalive())
    conn = Connection(Role.SERVER)
    conn.receive_data(keepalive * 50_000)
    events, outcome = drain(conn)
    assert len(events) == 50_000
    assert outcome is NEED_DATA
    assert conn.trailing_data == b""


def test_a_large_payload_fed_in_small_chunks_arrives_whole():
    payload = random.Random(7).randbytes(4 * 1024 * 1024)
    frame = encode_frame(Dialect.CRC32C, 0x04, payload, batch_id=3, record_count=1)
    conn = Connection(Role.SERVER)
    events, outcome = feed(conn, frame + frame[:10], 1500)
    assert outcome is NEED_DATA
    assert [e.payload == payload for e in events] == [True]
    assert conn.trailing_data == frame[:10]


def test_random_garbage_between_good_frames_kills_the_connection():
    rng = random.Random(1992)
    for _ in range(200):
        good = rng.choice(SAMPLE_FRAMES[:3])
        garbage = rng.randbytes(rng.randint(1, 60))
        conn = Connection(Role.SERVER)
        events, outcome = feed(conn, good + garbage + good, rng.randint(1, 64))
        assert len(events) == 1
        assert isinstance(outcome, ProtocolError)
        assert outcome.offset == len(good)


def test_header_fields_unpack_like_the_spec_table():
    frame = encode_frame(Dialect.CRC32C, 0x04, b"abc", batch_id=0x1122334455667788,
                         timestamp_ns=0x0102030405060708, record_count=9, topic_id=0xA0B0C0D0)
    (magic, version, flags, reserved, _crc, batch_id, ts, count, length, _pcrc,
     topic) = struct.unpack_from("<4sBBHIQQIIII", frame)
    assert (magic, version, flags, reserved) == (b"LANC", 1, 4, 0)
    assert (batch_id, ts, count, length, topic) == (
        0x1122334455667788, 0x0102030405060708, 9, 3, 0xA0B0C0D0)
