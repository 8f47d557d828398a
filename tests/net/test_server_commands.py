"""Every LWP command against a real broker process, over raw sockets."""
import time

from lance_net.protocol import (
    FETCH_TAIL, INVALID_CLIENT_COMMAND, Ack, CatchingUp, ClusterStatusResponse, CommitAck,
    CommitOffset, CreateTopic, CreateTopicWithRetention, DeleteTopic, Dialect, ErrorResponse,
    Fetch, FetchResponse, GetClusterStatus, GetTopic, Ingest, InitProducer, Keepalive,
    ListOffsets, ListTopics, OffsetsResponse, ProducerResponse, SetRetention, Subscribe,
    SubscribeAck, TopicResponse, Unsubscribe, UnsubscribeAck,
)
from lance_net.protocol.frames import FLAG_CONTROL, FLAG_ENCRYPTED, FLAG_INGEST, encode_frame
from lance_store.records import encode

from .conftest import batches_of

TOPIC_KEYS = {"id", "name", "created_at", "topic_epoch", "retention"}


def test_create_topic_is_idempotent_and_listed(module_broker):
    with module_broker.client() as c:
        first = c.create_topic("cmd-create")
        again = c.create_topic("cmd-create")
        assert set(first) == TOPIC_KEYS
        assert first == again
        listed = c.request(ListTopics()).data["topics"]
        assert first in listed
        assert c.request(GetTopic(first["id"])).data == first


def test_create_topic_with_retention_and_set_retention(module_broker):
    with module_broker.client() as c:
        topic = c.request(CreateTopicWithRetention("cmd-retained", 3600, 1 << 30)).data
        assert topic["retention"] == {"max_age_secs": 3600, "max_bytes": 1 << 30}
        changed = c.request(SetRetention(topic["id"], 60, 0)).data
        assert changed["retention"] == {"max_age_secs": 60, "max_bytes": 0}
        assert c.request(GetTopic(topic["id"])).data["retention"] == changed["retention"]


def test_delete_topic_then_it_is_unknown(module_broker):
    with module_broker.client() as c:
        topic = c.create_topic("cmd-doomed")
        assert c.produce(topic["id"], 1, [b"x"]) == Ack(1)
        assert c.request(DeleteTopic(topic["id"])).data == {"deleted": topic["id"]}
        gone = c.request(GetTopic(topic["id"]))
        assert gone == ErrorResponse(f"UNKNOWN_TOPIC: {topic['id']}")
        refused = c.produce(topic["id"], 2, [b"y"])
        assert refused.error_code == "UNKNOWN_TOPIC" and refused.batch_id == 2
        assert topic["name"] not in [t["name"] for t in c.request(ListTopics()).data["topics"]]
        recreated = c.create_topic("cmd-doomed")
        assert recreated["id"] != topic["id"]
        assert c.fetch(recreated["id"], 0).next_offset == 0


def test_topic_id_zero_and_unknown_ids_are_refused(module_broker):
    with module_broker.client() as c:
        assert c.request(GetTopic(0)) == ErrorResponse("UNKNOWN_TOPIC: 0")
        assert c.fetch(0, 0) == ErrorResponse("UNKNOWN_TOPIC: 0")
        assert c.request(ListOffsets(999999, 0)).error_code == "UNKNOWN_TOPIC"
        refused = c.produce(0, 7, [b"x"])
        assert refused.error_code == "UNKNOWN_TOPIC" and refused.batch_id == 7


def test_invalid_topic_name_is_refused(module_broker):
    with module_broker.client() as c:
        reply = c.request(CreateTopic("no/slashes here"))
        assert isinstance(reply, ErrorResponse) and "invalid topic name" in reply.message


def test_cluster_status_of_a_standalone_node(module_broker):
    with module_broker.client() as c:
        status = c.request(GetClusterStatus())
    assert isinstance(status, ClusterStatusResponse)
    assert status.data == {
        "node_id": 1, "mode": "standalone", "is_leader": True, "leader_id": 1,
        "leader_addr": module_broker.endpoint, "epoch": 0, "current_term": 0, "node_count": 1,
        "healthy_nodes": 1, "quorum_available": True, "peer_states": {},
    }


def test_ingest_ack_fetch_round_trip(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-roundtrip")["id"]
        sent = [[f"b{b}-r{r}".encode() for r in range(b + 1)] for b in range(20)]
        for batch_id, values in enumerate(sent, start=100):
            c.ingest(tid, batch_id, values)          # pipelined: no wait between batches
        assert [c.recv() for _ in sent] == [Ack(i) for i in range(100, 120)]
        stored = c.fetch_all(tid)
        assert [b.records for b in stored] == sent
        first = c.fetch(tid, 0)
        assert first.record_count == sum(len(v) for v in sent)
        assert first.next_offset == c.fetch(tid, FETCH_TAIL).next_offset
        # max_bytes below one batch: that batch alone, whole
        one = c.fetch(tid, stored[3].offset, max_bytes=1)
        assert [b.records for b in batches_of(one.data)] == [sent[3]]
        assert one.next_offset == stored[4].offset and one.record_count == 4


def test_fetch_edges(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-fetch-edges")["id"]
        assert c.produce(tid, 1, [b"alpha", b"beta"]) == Ack(1)
        high = c.fetch(tid, FETCH_TAIL).next_offset
        assert high > 0
        at_high = c.fetch(tid, high)
        assert isinstance(at_high, FetchResponse)
        assert (at_high.next_offset, at_high.record_count, bytes(at_high.data)) == (high, 0, b"")
        assert c.fetch(tid, high + 1000) == CatchingUp(high)
        inside = c.fetch(tid, 3)
        assert inside.error_code == "INVALID_OFFSET"
        tail = c.fetch(tid, FETCH_TAIL, max_bytes=1)
        assert (tail.next_offset, len(tail.data)) == (high, 0)


def test_acks_and_refusals_leave_in_arrival_order(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-order")["id"]
        good, count = encode([b"one", b"two"])
        c.send(Ingest(tid, 1, count, good),
               Ingest(tid, 2, count + 1, good),       # record_count does not match
               Ingest(tid, 3, 1, b"\x00\xff\xff"),      # not TLV
               Ingest(tid, 4, count, good))
        replies = [c.recv() for _ in range(4)]
        assert replies[0] == Ack(1) and replies[3] == Ack(4)
        assert [(r.error_code, r.batch_id) for r in replies[1:3]] == [("INVALID_BATCH", 2),
                                                                      ("INVALID_BATCH", 3)]
        assert "record_count 3 but payload holds 2" in replies[1].message
        assert [b.records for b in c.fetch_all(tid)] == [[b"one", b"two"]] * 2


def test_batch_with_a_broker_only_record_type_is_refused(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-reserved")["id"]
        payload = bytes([0xFD]) + (3).to_bytes(4, "little") + b"\0\0\0"
        c.send(Ingest(tid, 6, 1, payload))
        reply = c.recv()
        assert reply.error_code == "INVALID_BATCH" and reply.batch_id == 6
        assert "padding" in reply.message


def test_compressed_ingest_is_stored_as_records(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-lz4")["id"]
        values = [b"z" * 500, b"y" * 700, b"hello"]
        c.ingest(tid, 1, values, compressed=True)
        assert c.recv() == Ack(1)
        assert [b.records for b in c.fetch_all(tid)] == [values]
        c.send(Ingest(tid, 2, 1, b"\xff\xff\xff\x7fgarbage", compressed=True))
        bad = c.recv()
        assert bad.error_code == "INVALID_BATCH" and bad.batch_id == 2


def test_ieee_connection_stores_opaque_payload_as_one_raw_record(module_broker):
    with module_broker.client() as admin:
        tid = admin.create_topic("cmd-upstream")["id"]
    with module_broker.client(dialect=Dialect.IEEE) as c:
        c.send(Ingest(tid, 1, 1, b"line one\nline two"))   # upstream's text lines
        assert c.recv() == Ack(1)
        c.ingest(tid, 2, [b"real", b"tlv"])                 # TLV still stored as records
        assert c.recv() == Ack(2)
        stored = c.fetch_all(tid)
        assert [b.records for b in stored] == [[b"line one\nline two"], [b"real", b"tlv"]]
        assert stored[0].types == [0x00]
        # upstream clients wait for an Ack carrying the consumer id
        assert c.request(Unsubscribe(tid, 42)) == Ack(42)


def test_crc32c_connection_refuses_opaque_payload(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-strict")["id"]
        c.send(Ingest(tid, 9, 1, b"not tlv at all"))
        reply = c.recv()
        assert reply.error_code == "INVALID_BATCH" and reply.batch_id == 9
        assert c.fetch(tid, FETCH_TAIL).next_offset == 0


def test_long_poll_fetch_is_woken_by_an_ingest(module_broker):
    with module_broker.client() as consumer, module_broker.client() as producer:
        tid = consumer.create_topic("cmd-longpoll")["id"]
        consumer.send(Fetch(tid, 0, 1 << 20, max_wait_ms=20_000))
        time.sleep(0.2)  # let the fetch park first
        assert producer.produce(tid, 1, [b"wake up"]) == Ack(1)
        reply = consumer.recv(timeout=30)
        assert isinstance(reply, FetchResponse)
        assert [b.records for b in batches_of(reply.data)] == [[b"wake up"]]


def test_long_poll_without_data_answers_empty(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-longpoll-empty")["id"]
        reply = c.fetch(tid, 0, max_wait_ms=100)
        assert isinstance(reply, FetchResponse)
        assert (reply.next_offset, reply.record_count, len(reply.data)) == (0, 0, 0)


def test_list_offsets(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-offsets")["id"]
        base = 1_800_000_000_000_000_000
        for i in range(3):
            c.ingest(tid, i + 1, [b"x" * 10], timestamp_ns=base + i * 1_000_000_000)
        assert [c.recv() for _ in range(3)] == [Ack(1), Ack(2), Ack(3)]
        stored = c.fetch_all(tid)
        high = c.fetch(tid, FETCH_TAIL).next_offset
        assert c.request(ListOffsets(tid, ListOffsets.EARLIEST)) == OffsetsResponse(0, 0, high)
        assert c.request(ListOffsets(tid, ListOffsets.LATEST)) == OffsetsResponse(high, 0, high)
        second = c.request(ListOffsets(tid, base + 500_000_000))
        assert second == OffsetsResponse(stored[1].offset, 0, high)
        assert c.request(ListOffsets(tid, base + 10**12)).offset == high


def test_subscribe_commit_unsubscribe(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-consumer")["id"]
        for i in range(3):
            c.ingest(tid, i + 1, [b"v"])
        assert [c.recv() for _ in range(3)] == [Ack(1), Ack(2), Ack(3)]
        stored = c.fetch_all(tid)
        # the resume start (u64 max): committed offset, else the low watermark
        assert c.request(Subscribe(tid, FETCH_TAIL, 65536, 42)) == SubscribeAck(42, 0)
        assert c.request(Subscribe(tid, stored[1].offset, 65536, 43)) == \
            SubscribeAck(43, stored[1].offset)
        assert c.request(CommitOffset(tid, 42, stored[2].offset)) == CommitAck(42, stored[2].offset)
        assert c.request(Subscribe(tid, FETCH_TAIL, 65536, 42)) == SubscribeAck(42, stored[2].offset)
        beyond = c.request(CommitOffset(tid, 42, 10**9))
        assert beyond.error_code == "OFFSET_OUT_OF_RANGE"
        assert c.request(Unsubscribe(tid, 42)) == UnsubscribeAck(42)


def test_idempotent_producer_deduplicates_and_refuses_gaps(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-idempotent")["id"]
        init = c.request(InitProducer(0, tid))
        assert isinstance(init, ProducerResponse) and init.producer_id > 0 and init.last_seq == 0
        pid = init.producer_id
        assert c.produce(tid, 0, [b"zero"]).error_code == "OUT_OF_ORDER_SEQUENCE"
        assert c.produce(tid, 1, [b"one"]) == Ack(1)
        assert c.produce(tid, 2, [b"two"]) == Ack(2)
        assert c.produce(tid, 2, [b"two again"]) == Ack(2)       # durable duplicate
        gap = c.produce(tid, 4, [b"four"])
        assert gap.error_code == "OUT_OF_ORDER_SEQUENCE" and gap.batch_id == 4
        assert "expected sequence 3, found 4" in gap.message
        c.ingest(tid, 3, [b"three"])
        c.ingest(tid, 3, [b"three again"])                      # duplicate while in flight
        assert [c.recv(), c.recv()] == [Ack(3), Ack(3)]
        stored = c.fetch_all(tid)
        assert [b.records for b in stored] == [[b"one"], [b"two"], [b"three"]]
        assert [(b.producer_id, b.producer_seq) for b in stored] == [(pid, 1), (pid, 2), (pid, 3)]
    with module_broker.client() as again:
        assert again.request(InitProducer(pid, tid)) == ProducerResponse(pid, 3)
        assert again.produce(tid, 3, [b"retry"]) == Ack(3)
        assert again.produce(tid, 4, [b"four"]) == Ack(4)
        assert len(again.fetch_all(tid)) == 4
        other = again.request(InitProducer(0, tid))
        assert other.producer_id not in (0, pid)


def test_keepalive_is_echoed(module_broker):
    with module_broker.client() as c:
        assert c.request(Keepalive()) == Keepalive()


def test_invalid_command_keeps_the_connection(module_broker):
    with module_broker.client() as c:
        c.send_raw(encode_frame(Dialect.CRC32C, FLAG_CONTROL, b"", batch_id=0x77))
        assert c.recv() == ErrorResponse(INVALID_CLIENT_COMMAND)
        c.send_raw(encode_frame(Dialect.CRC32C, FLAG_CONTROL, b"\x01", batch_id=0x04))  # short
        assert c.recv() == ErrorResponse(INVALID_CLIENT_COMMAND)
        assert isinstance(c.request(ListTopics()), TopicResponse)


def test_encrypted_ingest_is_refused(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-encrypted")["id"]
        payload, count = encode([b"secret"])
        c.send_raw(encode_frame(Dialect.CRC32C, FLAG_INGEST | FLAG_ENCRYPTED, payload,
                                batch_id=11, record_count=count, topic_id=tid))
        reply = c.recv()
        assert reply.error_code == "INVALID_BATCH" and reply.batch_id == 11
        assert c.fetch(tid, FETCH_TAIL).next_offset == 0


def test_pipelined_requests_are_all_answered_in_order(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-pipelined")["id"]
        assert c.produce(tid, 1, [b"small"]) == Ack(1)
        requests = [Fetch(tid, 0, 1 << 16) if i % 2 else GetTopic(tid) for i in range(400)]
        c.send(*requests)                      # far more than the node answers at once
        replies = [c.recv() for _ in requests]
        assert [type(r) for r in replies] == [FetchResponse if i % 2 else TopicResponse
                                              for i in range(400)]
        assert all(r.record_count == 1 for r in replies[1::2])


def test_a_client_that_reads_late_gets_every_reply(module_broker):
    with module_broker.client() as c:
        tid = c.create_topic("cmd-late-reader")["id"]
        assert c.produce(tid, 1, [b"L" * 60_000] * 16) == Ack(1)
        c.send(*[Fetch(tid, 0, 1 << 20) for _ in range(60)])
        time.sleep(0.5)                        # replies pile up: the node stops reading
        replies = [c.recv(timeout=30) for _ in range(60)]
        assert all(isinstance(r, FetchResponse) and r.record_count == 16 for r in replies)
        assert c.request(Keepalive()) == Keepalive()
