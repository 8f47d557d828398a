"""A client and a server Connection joined by an in-memory link: what one sends, the other decodes."""
import pytest

from lance_net.protocol import (
    FETCH_TAIL, INVALID_CLIENT_COMMAND, NEED_DATA, Ack, Authenticate, AuthenticateResponse,
    Backpressure, CatchingUp, ClusterStatusResponse, CommandCode, CommitAck, CommitOffset,
    Connection, ConnectionClosed, ConnectionStateError, CreateTopic, CreateTopicWithRetention,
    DeleteTopic, Dialect, ErrorResponse, Fetch, FetchResponse, GetClusterStatus, GetTopic, Ingest,
    InitProducer, InvalidBatch, InvalidCommand, Keepalive, ListOffsets, ListTopics,
    OffsetsResponse, ProducerResponse, Role, SetRetention, Subscribe, SubscribeAck,
    TopicResponse, Unsubscribe, UnsubscribeAck, UnsupportedFrame, compress_block,
    parse_error_message,
)
from lance_net.protocol.frames import (
    FLAG_COMPRESSED, FLAG_CONTROL, FLAG_ENCRYPTED, FLAG_INGEST, encode_frame,
)
from lance_store.records import encode as encode_records

REQUESTS = [
    CreateTopic("orders"),
    CreateTopic("ünïcode-名前"),
    DeleteTopic(3),
    ListTopics(),
    GetTopic(0xFFFFFFFF),
    SetRetention(2, 3600, 0),
    CreateTopicWithRetention("events", 86400, 1 << 40),
    CreateTopicWithRetention("", 0, 0),
    GetClusterStatus(),
    Authenticate("tok-en"),
    InitProducer(0, 3),
    InitProducer(77, 4),
    Fetch(5, 0, 65536),
    Fetch(5, 4096, 1, max_wait_ms=0),
    Fetch(1, FETCH_TAIL, 1, max_wait_ms=0xFFFFFFFF),
    ListOffsets(3, ListOffsets.EARLIEST),
    ListOffsets(3, ListOffsets.LATEST),
    Subscribe(1, 97, 1 << 20, 42),
    Unsubscribe(1, 42),
    CommitOffset(1, 42, 189),
]
REPLIES = [
    AuthenticateResponse(True, "Authenticated"),
    AuthenticateResponse(False, ""),
    ProducerResponse(12, 7),
    FetchResponse(189, 3, b"\x01\x02\x00\x00\x00ab"),
    FetchResponse(0, 0),
    CatchingUp(4096),
    OffsetsResponse(97, 0, 189),
    SubscribeAck(42, 97),
    CommitAck(42, 189),
    UnsubscribeAck(42),
    TopicResponse({"id": 1, "name": "orders", "created_at": 1700000000, "topic_epoch": 1,
                   "retention": {"max_age_secs": 0, "max_bytes": 0}}),
    TopicResponse({"topics": []}),
    ClusterStatusResponse({"node_id": 1, "mode": "l3", "peer_states": {"2": "Connected"}}),
    ErrorResponse("NOT_LEADER: redirect to 10.0.0.2:1992"),
    ErrorResponse("INVALID_BATCH: record 0: truncated record header at byte 0", batch_id=17),
    ErrorResponse("plain words"),
]
RECORDS, RECORD_COUNT = encode_records([b"hello", (0x01, b'{"a":1}'), (0xFF, 9, b"ext")])


class Link:
    """Two connections and the bytes in flight between them."""

    def __init__(self, client_dialect=Dialect.CRC32C, chunk=None):
        self.client = Connection(Role.CLIENT, client_dialect)
        self.server = Connection(Role.SERVER)
        self.chunk = chunk

    def _deliver(self, data, receiver):
        step = self.chunk or max(len(data), 1)
        events = []
        for at in range(0, len(data), step):
            receiver.receive_data(data[at:at + step])
            while (event := receiver.next_event()) is not NEED_DATA:
                events.append(event)
        return events

    def to_server(self, *events):
        return self._deliver(b"".join(self.client.send(e) for e in events), self.server)

    def to_client(self, *events):
        return self._deliver(b"".join(self.server.send(e) for e in events), self.client)


@pytest.mark.parametrize("dialect", list(Dialect))
def test_every_request_and_reply_crosses_the_link(dialect):
    link = Link(dialect)
    assert link.to_server(*REQUESTS) == REQUESTS
    assert link.server.dialect is dialect
    assert link.to_client(*REPLIES) == REPLIES


@pytest.mark.parametrize("chunk", [1, 3, 44, 45, 1000])
def test_any_chunking_gives_the_same_events(chunk):
    link = Link(chunk=chunk)
    data_events = [Ingest(7, 1, RECORD_COUNT, RECORDS, timestamp_ns=123), Keepalive()]
    assert link.to_server(*REQUESTS, *data_events) == REQUESTS + data_events
    replies = REPLIES + [Ack(1), Backpressure(), Keepalive()]
    assert link.to_client(*replies) == replies


def test_data_frames_cross_the_link():
    link = Link()
    ingest = Ingest(topic_id=7, batch_id=1, record_count=RECORD_COUNT, payload=RECORDS,
                    timestamp_ns=1706918400000000000)
    assert link.to_server(ingest, Keepalive()) == [ingest, Keepalive()]
    assert link.to_client(Ack(1), Backpressure(), Keepalive(), Ack(2**64 - 1)) == [
        Ack(1), Backpressure(), Keepalive(), Ack(2**64 - 1)]


def test_compressed_ingest_keeps_its_block_and_yields_the_records():
    link = Link()
    ingest = Ingest.compress(topic_id=7, batch_id=5, record_count=RECORD_COUNT,
                             records=RECORDS * 100)
    (received,) = link.to_server(ingest)
    assert received == ingest
    assert received.compressed
    assert len(received.payload) < len(RECORDS * 100)
    assert received.records() == RECORDS * 100


def test_compressed_ingest_with_a_bad_block_is_an_invalid_batch():
    link = Link()
    frame = encode_frame(Dialect.CRC32C, FLAG_INGEST | FLAG_COMPRESSED, b"\x10\x00\x00\x00junk",
                         batch_id=6, record_count=1, topic_id=7)
    link.server.receive_data(frame)
    event = link.server.next_event()
    with pytest.raises(InvalidBatch, match="LZ4 block"):
        event.records()
    bomb = Ingest(7, 6, 1, b"\xff\xff\xff\x7f" + b"\x00" * 8, compressed=True)
    with pytest.raises(InvalidBatch, match="uncompressed_len expected at most 1024"):
        bomb.records(max_size=1024)


def test_compressed_control_frame_is_decompressed():
    link = Link()
    payload = compress_block(b"squeezed")
    link.server.receive_data(encode_frame(Dialect.CRC32C, FLAG_CONTROL | FLAG_COMPRESSED, payload,
                                          batch_id=CommandCode.CREATE_TOPIC))
    assert link.server.next_event() == CreateTopic("squeezed")


def test_payload_buffers_are_sent_without_copies():
    client = Connection(Role.CLIENT)
    parts = [b"\x00\x03\x00\x00\x00abc", bytearray(b"\x00\x01\x00\x00\x00z")]
    frame = client.send_buffers(Ingest(1, 1, 2, parts))
    assert len(frame) == 3
    assert frame[1] is parts[0] and frame[2] is parts[1]
    server = Connection(Role.SERVER)
    server.receive_data(b"".join(frame))
    assert server.next_event().payload == b"".join(parts)


def test_fetch_response_data_may_be_buffers():
    server = Connection(Role.SERVER, Dialect.CRC32C)
    batches = [b"batch-one", memoryview(b"batch-two")]
    frame = server.send_buffers(FetchResponse(18, 2, batches))
    assert frame[2] is batches[0] and frame[3] is batches[1]
    client = Connection(Role.CLIENT)
    client.receive_data(b"".join(frame))
    event = client.next_event()
    assert event == FetchResponse(18, 2, b"batch-onebatch-two")


def test_server_only_command_from_a_client_is_an_invalid_command():
    server = Connection(Role.SERVER)
    for code in (CommandCode.TOPIC_RESPONSE, CommandCode.ERROR_RESPONSE, 0x99, 1 << 40):
        server.receive_data(encode_frame(Dialect.CRC32C, FLAG_CONTROL, b"{}", batch_id=code))
        event = server.next_event()
        assert isinstance(event, InvalidCommand)
        assert event.code == code
    # The stream stays in step: the next request still decodes, and the answer goes out.
    server.receive_data(encode_frame(Dialect.CRC32C, FLAG_CONTROL,
                                     batch_id=CommandCode.LIST_TOPICS))
    assert server.next_event() == ListTopics()
    reply = server.send(ErrorResponse(INVALID_CLIENT_COMMAND))
    client = Connection(Role.CLIENT)
    client.receive_data(reply)
    assert client.next_event() == ErrorResponse("Invalid client command")


def test_client_only_command_from_a_server_is_an_invalid_command():
    client = Connection(Role.CLIENT)
    client.receive_data(encode_frame(Dialect.CRC32C, FLAG_CONTROL, b"x",
                                     batch_id=CommandCode.CREATE_TOPIC))
    event = client.next_event()
    assert event == InvalidCommand(CommandCode.CREATE_TOPIC,
                                   "CreateTopic (0x01) is not sent by a server")


@pytest.mark.parametrize("code,payload,words", [
    (CommandCode.DELETE_TOPIC, b"\x01\x00", "DeleteTopic: expected a payload of 4 bytes, found 2"),
    (CommandCode.FETCH, b"\x00" * 15, "Fetch: expected a payload of 16 bytes, found 15"),
    (CommandCode.CREATE_TOPIC, b"\xff\xfe", "CreateTopic.name: expected UTF-8"),
    (CommandCode.CREATE_TOPIC_WITH_RETENTION, b"\x09\x00abc",
     "expected 27 bytes for a 9-byte name, found 5"),
])
def test_unparsable_request_is_an_invalid_command(code, payload, words):
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(Dialect.CRC32C, FLAG_CONTROL, payload, batch_id=code))
    event = server.next_event()
    assert isinstance(event, InvalidCommand)
    assert event.code == code
    assert words in event.reason


def test_trailing_request_bytes_are_ignored_as_upstream_does():
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(Dialect.CRC32C, FLAG_CONTROL, b"\x05\x00\x00\x00extra",
                                     batch_id=CommandCode.GET_TOPIC))
    assert server.next_event() == GetTopic(5)


def test_encrypted_and_empty_frames_are_unsupported_not_fatal():
    server = Connection(Role.SERVER)
    server.receive_data(encode_frame(Dialect.CRC32C, FLAG_INGEST | FLAG_ENCRYPTED, b"??",
                                     batch_id=4))
    server.receive_data(encode_frame(Dialect.CRC32C, 0, batch_id=5))
    first, second = server.next_event(), server.next_event()
    assert isinstance(first, UnsupportedFrame) and first.batch_id == 4
    assert isinstance(second, UnsupportedFrame) and second.batch_id == 5
    assert server.next_event() is NEED_DATA


def test_each_role_sends_only_its_own_events():
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, Dialect.CRC32C)
    with pytest.raises(ConnectionStateError, match="a client does not send Ack"):
        client.send(Ack(1))
    with pytest.raises(ConnectionStateError, match="does not send TopicResponse"):
        client.send(TopicResponse({}))
    with pytest.raises(ConnectionStateError, match="a server does not send CreateTopic"):
        server.send(CreateTopic("x"))
    with pytest.raises(ConnectionStateError, match="does not send Ingest"):
        server.send(Ingest(1, 1, 0, b""))


def test_out_of_range_fields_are_named():
    client = Connection(Role.CLIENT)
    with pytest.raises(ValueError, match=r"Subscribe.max_batch_bytes: expected an integer "
                                         r"in 0..2\*\*32-1, found 4294967296"):
        client.send(Subscribe(1, 0, 1 << 32, 1))
    with pytest.raises(ValueError, match="batch_id"):
        client.send(Ingest(1, -1, 0, b""))
    with pytest.raises(ValueError, match="Fetch.max_wait_ms"):
        client.send(Fetch(1, 0, 1, max_wait_ms=-5))
    with pytest.raises(ValueError, match="name: expected at most 65535 bytes"):
        client.send(CreateTopicWithRetention("x" * 65536, 0, 0))


def test_send_refuses_payloads_over_the_limit():
    client = Connection(Role.CLIENT, max_payload_size=100)
    with pytest.raises(ValueError, match="payload_length: expected at most 100"):
        client.send(Ingest(1, 1, 1, b"x" * 101))
    assert len(client.send(Ingest(1, 1, 1, b"x" * 100))) == 144


def test_end_of_stream_between_frames_is_connection_closed():
    link = Link()
    link.server.receive_data(link.client.send(ListTopics()))
    link.server.receive_data(b"")
    assert link.server.next_event() == ListTopics()
    assert link.server.next_event() == ConnectionClosed()
    assert link.server.next_event() == ConnectionClosed()
    with pytest.raises(ConnectionStateError):
        link.server.receive_data(b"more")


def test_error_response_codes_parse():
    assert parse_error_message("OFFSET_OUT_OF_RANGE: low=0 high=97") == (
        "OFFSET_OUT_OF_RANGE", "low=0 high=97")
    assert parse_error_message("Topic not found") == (None, "Topic not found")
    assert parse_error_message("Note: lower case first") == (None, "Note: lower case first")
    refused = ErrorResponse.of("INVALID_BATCH", "record 2 at byte 10: type 0xFE", batch_id=3)
    assert refused.message == "INVALID_BATCH: record 2 at byte 10: type 0xFE"
    assert refused.error_code == "INVALID_BATCH"
    assert refused.detail == "record 2 at byte 10: type 0xFE"
    assert ErrorResponse("Invalid client command").error_code is None
