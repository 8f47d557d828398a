"""Every frame of spec/lwp_vectors.json decodes to the event it describes and re-encodes byte for byte."""
import json
import pathlib
import zlib

import crc32c
import pytest

from lance_net.protocol import (
    FETCH_TAIL, NEED_DATA, REPLIES, Ack, Authenticate, AuthenticateResponse, Backpressure,
    CatchingUp, ClusterStatusResponse, CommitAck, CommitOffset, Connection, CreateTopic,
    CreateTopicWithRetention, DeleteTopic, Dialect, ErrorResponse, Fetch, FetchResponse,
    GetClusterStatus, GetTopic, Ingest, InitProducer, Keepalive, ListOffsets, ListTopics,
    OffsetsResponse, ProducerResponse, Role, SetRetention, Subscribe, SubscribeAck,
    TopicResponse, Unsubscribe, UnsubscribeAck,
)
from lance_net.protocol.errors import InvalidBatch
from lance_net.protocol.ingest import validate_ingest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The spec pages and their vectors live in the repository's spec/.
SPEC_DIRS = [ROOT / "spec"]


def _spec_file(name):
    for folder in SPEC_DIRS:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{name}: not in any of {[str(d) for d in SPEC_DIRS]}")


VECTORS = json.loads(_spec_file("lwp_vectors.json").read_text())
FRAMES = {frame["name"]: frame for frame in VECTORS["frames"]}

HELLO_WORLD = bytes.fromhex("010500000068656C6C6F0105000000776F726C64")
BATCH_1 = bytes.fromhex(  # format_vectors.json batch_1
    "FE480000004C4E4342010000000000000000000000000094BC3D31B0170000000000000100000094BC3D31"
    "B01700000000000000000000000000000000020000001400000042616015B8B0CCB2010500000068656C6C"
    "6F0105000000776F726C64")
TS = 1706918400000000000

EXPECTED = {
    "keepalive": Keepalive(),
    "ack_1": Ack(1),
    "ack_big": Ack(0x0102030405060708),
    "backpressure": Backpressure(),
    "ingest_test": Ingest(topic_id=0, batch_id=1, record_count=1, payload=b"test"),
    "ingest_hello_world": Ingest(topic_id=7, batch_id=2, record_count=2, payload=HELLO_WORLD,
                                 timestamp_ns=TS),
    "create_topic": CreateTopic("my-events"),
    "delete_topic": DeleteTopic(1),
    "list_topics": ListTopics(),
    "get_topic": GetTopic(1),
    "set_retention": SetRetention(1, 86400, 1 << 30),
    "create_topic_with_retention": CreateTopicWithRetention("events", 86400, 0),
    "cluster_status": GetClusterStatus(),
    "authenticate": Authenticate("secret"),
    "auth_ok": AuthenticateResponse(True, "Authenticated"),
    "auth_fail": AuthenticateResponse(False, "Invalid token"),
    "fetch": Fetch(5, 1024, 32768),
    "fetch_tail": Fetch(1, FETCH_TAIL, 1),
    "fetch_response": FetchResponse(97, 2, BATCH_1),
    "fetch_response_upstream": FetchResponse(20, 1, HELLO_WORLD),
    "fetch_wait": Fetch(5, 1024, 32768, max_wait_ms=500),
    "init_producer": InitProducer(0, 3),
    "producer_response": ProducerResponse(12, 0),
    "list_offsets": ListOffsets(3, TS),
    "offsets_response": OffsetsResponse(97, 0, 189),
    "unsubscribe_ack": UnsubscribeAck(42),
    "cluster_status_response": ClusterStatusResponse({
        "current_term": 0, "epoch": 0, "healthy_nodes": 1, "is_leader": True,
        "leader_addr": "127.0.0.1:1992", "leader_id": 0, "mode": "standalone",
        "node_count": 1, "node_id": 0, "peer_states": {}, "quorum_available": True,
    }),
    "ingest_error": ErrorResponse("INVALID_BATCH: record_count 3 but payload holds 2 records",
                                  batch_id=9),
    "catching_up": CatchingUp(4096),
    "subscribe": Subscribe(1, 0, 65536, 42),
    "unsubscribe": Unsubscribe(1, 42),
    "commit_offset": CommitOffset(1, 42, 5000),
    "subscribe_ack": SubscribeAck(42, 0),
    "commit_ack": CommitAck(42, 5000),
    "topic_response": TopicResponse({"deleted": 1}),
    "error_response": ErrorResponse("Topic not found"),
    "error_unknown_topic": ErrorResponse("UNKNOWN_TOPIC: 9"),
}

SERVER_SENT = REPLIES + (Ack, Backpressure)


def _upstream_shape(name):
    return FRAMES[name]["what"].startswith("upstream shape")


CASES = [(name, dialect) for name in FRAMES for dialect in Dialect
         if dialect is Dialect.IEEE or not _upstream_shape(name)]


def _receiver_role(event):
    return Role.CLIENT if isinstance(event, SERVER_SENT) else Role.SERVER


def _other(role):
    return Role.SERVER if role is Role.CLIENT else Role.CLIENT


def test_every_vector_has_an_expected_event():
    assert set(EXPECTED) == set(FRAMES)


def test_checksum_check_values():
    assert f"{crc32c.crc32c(b'123456789'):08X}" == VECTORS["checks"]["crc32c('123456789')"]
    assert f"{zlib.crc32(b'123456789'):08X}" == VECTORS["checks"]["ieee('123456789')"]
    assert Dialect.CRC32C.checksum(b"123456789") == 0xE3069283
    assert Dialect.IEEE.checksum(b"123456789") == 0xCBF43926


@pytest.mark.parametrize("name,dialect", CASES, ids=[f"{n}-{d.value}" for n, d in CASES])
def test_vector_decodes_and_reencodes(name, dialect):
    wire = bytes.fromhex(FRAMES[name][dialect.value])
    expected = EXPECTED[name]
    role = _receiver_role(expected)
    receiver = Connection(role, dialect)
    receiver.receive_data(wire)
    event = receiver.next_event()
    assert event == expected
    assert receiver.next_event() is NEED_DATA

    sender = Connection(_other(role), dialect)
    assert sender.send(expected) == wire
    assert sender.send(event) == wire
    assert b"".join(sender.send_buffers(event)) == wire


SERVER_CASES = [(n, d) for n, d in CASES if _receiver_role(EXPECTED[n]) is Role.SERVER]


@pytest.mark.parametrize("name,dialect", SERVER_CASES,
                         ids=[f"{n}-{d.value}" for n, d in SERVER_CASES])
def test_server_learns_dialect_from_vector(name, dialect):
    expected = EXPECTED[name]
    server = Connection(Role.SERVER)
    assert server.dialect is None
    server.receive_data(bytes.fromhex(FRAMES[name][dialect.value]))
    assert server.next_event() == expected
    assert server.dialect is dialect


def test_fetch_response_vector_carries_a_stored_batch():
    wire = bytes.fromhex(FRAMES["fetch_response"]["crc32c"])
    client = Connection(Role.CLIENT)
    client.receive_data(wire)
    event = client.next_event()
    assert bytes(event.data) == BATCH_1
    assert len(event.data) == 97


def test_upstream_raw_ingest_is_not_a_tlv_batch():
    # On an ieee connection the broker stores such a payload as one raw record instead.
    server = Connection(Role.SERVER)
    server.receive_data(bytes.fromhex(FRAMES["ingest_test"]["ieee"]))
    event = server.next_event()
    assert server.dialect is Dialect.IEEE
    with pytest.raises(InvalidBatch):
        validate_ingest(event.records(), event.record_count)


def test_ingest_vector_validates():
    server = Connection(Role.SERVER)
    server.receive_data(bytes.fromhex(FRAMES["ingest_hello_world"]["crc32c"]))
    event = server.next_event()
    assert validate_ingest(event.records(), event.record_count) == 2


def test_ingest_error_vector_message_matches_validation():
    with pytest.raises(InvalidBatch) as info:
        validate_ingest(HELLO_WORLD, 3)
    assert EXPECTED["ingest_error"].detail == str(info.value)
    assert EXPECTED["ingest_error"].error_code == "INVALID_BATCH"
