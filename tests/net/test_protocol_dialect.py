"""Checksum dialects: a server learns CRC-32C or CRC-32/IEEE from the first frame and then holds to it."""
import zlib

import crc32c
import pytest

from lance_net.protocol import (
    NEED_DATA, Ack, Connection, ConnectionStateError, CreateTopic, Dialect, HeaderChecksumMismatch,
    Keepalive, ListTopics, PayloadChecksumMismatch, ProtocolError, Role, TopicResponse,
)
from lance_net.protocol.frames import FLAG_CONTROL, encode_frame

LIST_TOPICS = {d: Connection(Role.CLIENT, d).send(ListTopics()) for d in Dialect}


def _header_crc(frame):
    return int.from_bytes(frame[8:12], "little")


def test_client_speaks_crc32c_unless_told_otherwise():
    assert Connection(Role.CLIENT).dialect is Dialect.CRC32C
    frame = Connection(Role.CLIENT).send(Keepalive())
    assert _header_crc(frame) == crc32c.crc32c(frame[:8])
    frame = Connection(Role.CLIENT, Dialect.IEEE).send(Keepalive())
    assert _header_crc(frame) == zlib.crc32(frame[:8])


@pytest.mark.parametrize("dialect", list(Dialect))
def test_server_answers_in_the_dialect_it_learned(dialect):
    server = Connection(Role.SERVER)
    server.receive_data(LIST_TOPICS[dialect])
    assert server.next_event() == ListTopics()
    assert server.dialect is dialect
    reply = server.send(TopicResponse({"topics": []}))
    assert _header_crc(reply) == dialect.checksum(reply[:8])
    assert int.from_bytes(reply[36:40], "little") == dialect.checksum(reply[44:])


@pytest.mark.parametrize("first,then", [(Dialect.CRC32C, Dialect.IEEE),
                                        (Dialect.IEEE, Dialect.CRC32C)])
def test_a_learned_dialect_is_required_for_the_rest_of_the_connection(first, then):
    server = Connection(Role.SERVER)
    server.receive_data(LIST_TOPICS[first] + LIST_TOPICS[then])
    assert server.next_event() == ListTopics()
    with pytest.raises(HeaderChecksumMismatch) as info:
        server.next_event()
    assert info.value.reason == "header_checksum"
    assert f"({first.value})" in str(info.value)
    assert info.value.offset == len(LIST_TOPICS[first])
    assert server.dialect is first


def test_a_pinned_server_refuses_the_other_dialect_from_the_start():
    server = Connection(Role.SERVER, Dialect.CRC32C)
    server.receive_data(LIST_TOPICS[Dialect.IEEE])
    with pytest.raises(HeaderChecksumMismatch):
        server.next_event()


def test_a_client_refuses_replies_in_the_other_dialect():
    client = Connection(Role.CLIENT)
    client.receive_data(Connection(Role.SERVER, Dialect.IEEE).send(Ack(1)))
    with pytest.raises(HeaderChecksumMismatch):
        client.next_event()


def test_a_header_matching_neither_dialect_names_both():
    frame = bytearray(LIST_TOPICS[Dialect.CRC32C])
    frame[8:12] = b"\x00\x00\x00\x00"
    server = Connection(Role.SERVER)
    server.receive_data(bytes(frame))
    with pytest.raises(HeaderChecksumMismatch, match=r"\(crc32c\) or 0x[0-9A-F]{8} \(ieee\)"):
        server.next_event()
    assert server.dialect is None


def test_payload_must_use_the_dialect_of_the_header():
    # Header in CRC-32C, payload checksummed with zlib: the first frame still fails.
    good = encode_frame(Dialect.CRC32C, FLAG_CONTROL, b"orders", batch_id=1)
    frame = bytearray(good)
    frame[36:40] = zlib.crc32(b"orders").to_bytes(4, "little")
    server = Connection(Role.SERVER)
    server.receive_data(bytes(frame))
    with pytest.raises(PayloadChecksumMismatch) as info:
        server.next_event()
    assert info.value.reason == "payload_checksum"
    assert info.value.found == zlib.crc32(b"orders")


def test_a_server_cannot_send_before_it_knows_the_dialect():
    server = Connection(Role.SERVER)
    with pytest.raises(ConnectionStateError, match="before the dialect is known"):
        server.send(Keepalive())
    server.receive_data(LIST_TOPICS[Dialect.IEEE][:43])
    assert server.next_event() is NEED_DATA
    assert server.dialect is None
    server.receive_data(LIST_TOPICS[Dialect.IEEE][43:])
    assert server.next_event() == ListTopics()
    assert _header_crc(server.send(Keepalive())) == zlib.crc32(server.send(Keepalive())[:8])


def test_the_dialect_is_learned_from_the_header_before_the_payload_arrives():
    frame = Connection(Role.CLIENT, Dialect.IEEE).send(CreateTopic("x" * 100))
    server = Connection(Role.SERVER)
    server.receive_data(frame[:50])
    assert server.next_event() is NEED_DATA
    assert server.dialect is Dialect.IEEE


def test_every_fatal_error_is_a_protocol_error_with_a_reason():
    server = Connection(Role.SERVER)
    server.receive_data(b"LNCR" + bytes(40))
    with pytest.raises(ProtocolError) as info:
        server.next_event()
    assert info.value.reason == "bad_magic"
    assert info.value.found == b"LNCR"
    assert server.trailing_data == b"LNCR" + bytes(40)
