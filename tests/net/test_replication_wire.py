"""The L3 data plane's bytes: round trips, split delivery, every refusal, and fuzzing."""
import random
import struct

import crc32c
import pytest
from hypothesis import given, settings, strategies as st

from lance_net.replication import wire
from lance_net.replication.wire import (
    NEED_DATA, NEW_EPOCH, NEW_SEGMENT, ROTATE_AFTER, STREAM_CLOSED, FollowerReply, Preamble,
    Replicate, ReplicationProtocolError, ReplicationReceiver, ReplyReceiver, Status,
)
from lance_store.segment import naming

U64 = st.integers(0, 2**64 - 1)


@st.composite
def replicates(draw):
    payload = draw(st.binary(max_size=300))
    flags = draw(st.sampled_from([0, NEW_SEGMENT, ROTATE_AFTER, NEW_EPOCH, NEW_SEGMENT | NEW_EPOCH,
                                  ROTATE_AFTER | NEW_SEGMENT | NEW_EPOCH]))
    if not payload and not flags and draw(st.booleans()):
        return Replicate(draw(U64), draw(U64), draw(st.integers(0, 2**32 - 1)), draw(U64), "", 0)
    base = draw(st.integers(0, 2**50))
    t0 = draw(st.integers(0, 2**62))
    write_offset = 0 if flags & NEW_SEGMENT else draw(st.integers(0, 2**40))
    t1 = draw(st.integers(t0 + 1, 2**63)) if flags & ROTATE_AFTER else draw(st.sampled_from([0, t0]))
    return Replicate(draw(U64), draw(U64), draw(st.integers(0, 2**32 - 1)),
                     base + write_offset + len(payload), naming.active(base, t0).filename,
                     write_offset, payload, flags, t1)


def stream(*messages, preamble=Preamble(3, 42)) -> bytes:
    return wire.encode_preamble(preamble) + b"".join(wire.encode_replicate(m) for m in messages)


def drain(receiver) -> list:
    out = []
    while (msg := receiver.next_message()) is not NEED_DATA and msg is not STREAM_CLOSED:
        out.append(msg)
    return out


def sample(payload=b"\x00batch bytes", flags=NEW_SEGMENT, write_offset=0) -> Replicate:
    name = naming.active(1000, 77)
    return Replicate(9, 500, 4, 1000 + write_offset + len(payload), name.filename, write_offset,
                     payload, flags, 99 if flags & ROTATE_AFTER else 0)


def test_layout_matches_the_spec():
    msg = sample(b"xyz", NEW_SEGMENT | ROTATE_AFTER)
    data = wire.encode_replicate(msg)
    name = msg.segment_name.encode()
    (length,) = struct.unpack_from("<I", data)
    assert length == len(data) - 4 == 58 + len(name) + 3
    epoch, committed, topic_id, global_offset, name_len = struct.unpack_from("<QQIQH", data, 4)
    assert (epoch, committed, topic_id, global_offset, name_len) == (9, 500, 4, 1003, len(name))
    assert data[34:34 + len(name)] == name
    write_offset, flags, reserved, t1, plen, pcrc = struct.unpack_from("<QB3sQII", data, 34 + len(name))
    assert (write_offset, flags, reserved, t1, plen) == (0, 0x03, b"\0\0\0", 99, 3)
    assert pcrc == crc32c.crc32c(b"xyz") and data.endswith(b"xyz")
    assert wire.encode_preamble(Preamble(0x0102, 0x0A0B)) == b"LNCR\x01\x02\x01" + (0x0A0B).to_bytes(8, "little")
    reply = wire.encode_reply(FollowerReply(5, 6, 7, Status.RESYNC, 8))
    assert reply == struct.pack("<IQIQBH", 23, 5, 6, 7, 2, 8)


@settings(max_examples=200, deadline=None)
@given(st.lists(replicates(), max_size=5), st.data())
def test_round_trip_in_any_split(messages, data):
    raw = stream(*messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    rx = ReplicationReceiver()
    got = []
    for a, b in zip([0] + cuts, cuts + [len(raw)]):
        if a < b:  # an empty chunk would mean the end of the stream
            rx.receive_data(raw[a:b])
        got.extend(drain(rx))
    rx.receive_data(b"")
    assert rx.next_message() is STREAM_CLOSED
    assert got == [Preamble(3, 42)] + messages


def test_one_byte_at_a_time():
    messages = [sample(), sample(b"more", 0, 13), Replicate(9, 600, 4, 1017, "", 0)]
    raw = stream(*messages)
    rx = ReplicationReceiver()
    got = []
    for i in range(len(raw)):
        rx.receive_data(raw[i:i + 1])
        got.extend(drain(rx))
    assert got == [Preamble(3, 42)] + messages
    assert got[-1].is_heartbeat and got[1].new_segment and not got[1].rotate_after


@given(st.lists(st.tuples(U64, st.integers(0, 2**32 - 1), U64, st.sampled_from(list(Status)),
                          st.integers(0, 2**16 - 1)), max_size=6), st.integers(1, 40))
def test_reply_round_trip(fields, chunk):
    replies = [FollowerReply(*f) for f in fields]
    raw = b"".join(wire.encode_reply(r) for r in replies)
    rx = ReplyReceiver()
    got = []
    for i in range(0, len(raw), chunk):
        rx.receive_data(raw[i:i + chunk])
        got.extend(drain(rx))
    assert got == replies


def test_a_large_payload_in_small_chunks():
    payload = random.Random(1).randbytes(3 << 20)
    msg = sample(payload)
    raw = stream(msg)
    rx = ReplicationReceiver()
    got = []
    for i in range(0, len(raw), 4096):
        rx.receive_data(raw[i:i + 4096])
        got.extend(drain(rx))
    assert got[1].payload == payload


def refused(raw: bytes, receiver=None) -> ReplicationProtocolError:
    rx = receiver or ReplicationReceiver()
    rx.receive_data(raw)
    with pytest.raises(ReplicationProtocolError) as info:
        drain(rx)
    # the stream is dead from then on
    with pytest.raises(ReplicationProtocolError):
        rx.next_message()
    with pytest.raises(ReplicationProtocolError):
        rx.receive_data(b"x")
    return info.value


def patch(raw: bytes, at: int, fmt: str, value) -> bytes:
    buf = bytearray(raw)
    struct.pack_into(fmt, buf, at, value)
    return bytes(buf)


PRE = wire.PREAMBLE_SIZE


@pytest.mark.parametrize("field, mutate", [
    ("magic", lambda r: b"LANC" + r[4:]),
    ("version", lambda r: patch(r, 4, "<B", 2)),
    ("length", lambda r: patch(r, PRE, "<I", wire.DEFAULT_MAX_MESSAGE_SIZE + 1)),
    ("length", lambda r: patch(r, PRE, "<I", 10) [:PRE + 14]),
    ("length", lambda r: patch(r, PRE, "<I", len(r) - PRE - 4 - 1)[:-1]),
    ("name_len", lambda r: patch(r, PRE + 4 + 28, "<H", 300)),
    ("flags", lambda r: patch(r, PRE + 4 + 30 + len(sample().segment_name) + 8, "<B", 0x08)),
    ("reserved", lambda r: patch(r, PRE + 4 + 30 + len(sample().segment_name) + 9, "<B", 1)),
    ("payload_crc", lambda r: r[:-1] + bytes([r[-1] ^ 0x40])),
    ("segment_name", lambda r: r.replace(b".lnc", b".idx")),
    ("segment_name", lambda r: r.replace(b"_77.lnc", b"\xff77.lnc")),
    ("write_offset", lambda r: patch(r, PRE + 4 + 30 + len(sample().segment_name), "<Q", 5)),
    ("global_offset", lambda r: patch(r, PRE + 4 + 20, "<Q", 3)),
])
def test_refusals_name_the_field(field, mutate):
    err = refused(mutate(stream(sample())))
    assert err.field == field, str(err)
    assert field in str(err)


def test_seal_time_must_follow_the_segment_start():
    bad = Replicate(1, 0, 1, 1000, naming.active(1000, 77).filename, 0, b"", ROTATE_AFTER, 77)
    assert refused(stream(bad)).field == "sealed_t1_ns"


def test_a_write_needs_a_segment_name():
    bad = Replicate(1, 0, 1, 10, "", 0, b"0123456789", 0, 0)
    assert refused(stream(bad)).field == "name_len"


def test_stream_ending_inside_a_message():
    raw = stream(sample())
    rx = ReplicationReceiver()
    rx.receive_data(raw[:-3])
    assert drain(rx) == [Preamble(3, 42)]
    rx.receive_data(b"")
    with pytest.raises(ReplicationProtocolError) as info:
        rx.next_message()
    assert info.value.field == "stream" and info.value.offset == PRE


def test_reply_refusals():
    good = wire.encode_reply(FollowerReply(1, 2, 3, Status.OK, 4))
    assert refused(patch(good, 4 + 20, "<B", 7), ReplyReceiver()).field == "status"
    assert refused(patch(good, 0, "<I", 24), ReplyReceiver()).field == "length"
    assert refused(patch(good, 0, "<I", 22) + b"\0" * 8, ReplyReceiver()).field == "length"


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_streams_decode_or_refuse(data):
    raw = bytearray(stream(sample(), sample(b"second", 0, 12), Replicate(9, 1, 4, 1018, "", 0)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    rx = ReplicationReceiver(max_message_size=1 << 16)
    rx.receive_data(bytes(raw))
    rx.receive_data(b"")
    try:
        got = drain(rx)
    except ReplicationProtocolError as exc:
        assert exc.field and 0 <= exc.offset <= len(raw)
    else:
        assert all(isinstance(m, (Preamble, Replicate)) for m in got)
        assert rx.next_message() is STREAM_CLOSED
        for m in got[1:]:  # whatever decoded is self-consistent
            assert m.global_offset >= len(m.payload)
            assert wire.encode_replicate(m) in bytes(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(raw):
    for rx in (ReplicationReceiver(max_message_size=1 << 16), ReplyReceiver()):
        rx.receive_data(raw)
        try:
            drain(rx)
        except ReplicationProtocolError as exc:
            assert exc.field
