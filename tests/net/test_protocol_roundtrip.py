"""Property tests: any event with in-range fields crosses a client-server link unchanged, however it is chunked."""
from hypothesis import given, settings
from hypothesis import strategies as st

from lance_net.protocol import (
    NEED_DATA, Ack, Authenticate, AuthenticateResponse, Backpressure, CatchingUp,
    ClusterStatusResponse, CommitAck, CommitOffset, Connection, CreateTopic,
    CreateTopicWithRetention, DeleteTopic, Dialect, ErrorResponse, Fetch, FetchResponse,
    GetClusterStatus, GetTopic, Ingest, InitProducer, Keepalive, ListOffsets, ListTopics,
    OffsetsResponse, ProducerResponse, Role, SetRetention, Subscribe, SubscribeAck,
    TopicResponse, Unsubscribe, UnsubscribeAck,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64) | names
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
)

requests = st.one_of(
    st.builds(CreateTopic, names),
    st.builds(DeleteTopic, u32),
    st.just(ListTopics()),
    st.builds(GetTopic, u32),
    st.builds(SetRetention, u32, u64, u64),
    st.builds(CreateTopicWithRetention, names, u64, u64),
    st.just(GetClusterStatus()),
    st.builds(Authenticate, names),
    st.builds(InitProducer, u64, u32),
    st.builds(Fetch, u32, u64, u32, st.none() | u32),
    st.builds(ListOffsets, u32, u64),
    st.builds(Subscribe, u32, u64, u32, u64),
    st.builds(Unsubscribe, u32, u64),
    st.builds(CommitOffset, u32, u64, u64),
    st.builds(Ingest, u32, u64, u32, st.binary(max_size=300), u64, st.just(False)),
    st.just(Keepalive()),
)
replies = st.one_of(
    st.builds(AuthenticateResponse, st.booleans(), names),
    st.builds(ProducerResponse, u64, u64),
    st.builds(FetchResponse, u64, u32, st.binary(max_size=300)),
    st.builds(CatchingUp, u64),
    st.builds(OffsetsResponse, u64, u64, u64),
    st.builds(SubscribeAck, u64, u64),
    st.builds(CommitAck, u64, u64),
    st.builds(UnsubscribeAck, u64),
    st.builds(TopicResponse, json_values),
    st.builds(ClusterStatusResponse, json_values),
    st.builds(ErrorResponse, names, u64),
    st.builds(Ack, u64),
    st.just(Backpressure()),
    st.just(Keepalive()),
)


def deliver(receiver, data, cuts):
    events = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in zip(bounds, bounds[1:]):
        receiver.receive_data(data[start:end])
        while (event := receiver.next_event()) is not NEED_DATA:
            events.append(event)
    return events


@settings(max_examples=200)
@given(events=st.lists(requests, min_size=1, max_size=8), dialect=st.sampled_from(list(Dialect)),
       cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_requests_round_trip(events, dialect, cuts):
    client = Connection(Role.CLIENT, dialect)
    server = Connection(Role.SERVER)
    data = b"".join(client.send(e) for e in events)
    assert deliver(server, data, cuts) == events
    assert server.dialect is dialect


@settings(max_examples=200)
@given(events=st.lists(replies, min_size=1, max_size=8), dialect=st.sampled_from(list(Dialect)),
       cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_replies_round_trip(events, dialect, cuts):
    server = Connection(Role.SERVER, dialect)
    client = Connection(Role.CLIENT, dialect)
    data = b"".join(server.send(e) for e in events)
    assert deliver(client, data, cuts) == events


@settings(max_examples=100)
@given(records=st.binary(max_size=5000), batch_id=u64, topic_id=u32)
def test_compressed_ingest_round_trips(records, batch_id, topic_id):
    ingest = Ingest.compress(topic_id=topic_id, batch_id=batch_id, record_count=1,
                             records=records)
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(ingest))
    received = server.next_event()
    assert received == ingest
    assert received.records() == records


@settings(max_examples=100)
@given(event=requests, dialect=st.sampled_from(list(Dialect)))
def test_send_and_send_buffers_agree(event, dialect):
    client = Connection(Role.CLIENT, dialect)
    assert b"".join(client.send_buffers(event)) == client.send(event)
