"""A client that closes (FIN) while the broker still owes it replies must not
stall the broker: the others keep being served and SIGTERM still drains."""
import time

from lance_net.protocol import CreateTopic, Fetch, Ingest, TopicResponse
from lance_store.records import encode_uniform

from .conftest import RawClient


def _topic_id(client, name):
    client.send(CreateTopic(name))
    reply = client.recv()
    assert isinstance(reply, TopicResponse)
    return reply.data["id"] if isinstance(reply.data, dict) else __import__("json").loads(reply.data)["id"]


def test_fin_with_acks_and_long_polls_owed(broker):
    host, port, _http, _data = broker
    with RawClient(host, port) as admin:
        tid = _topic_id(admin, "half-close")
    payload, count = encode_uniform([b"x" * 100] * 10)
    for _ in range(3):
        c = RawClient(host, port)
        c.send(*[Ingest(topic_id=tid, batch_id=i + 1, record_count=count, payload=payload)
                 for i in range(200)])
        c.send(Fetch(topic_id=tid, start=2**63, max_bytes=1 << 20, max_wait_ms=5000))
        c.close()                                   # FIN with replies owed
    time.sleep(0.5)
    with RawClient(host, port, timeout=10) as other:  # still served, promptly
        assert _topic_id(other, "half-close") == tid
    assert broker.stop() == 0                       # and it still drains on SIGTERM
