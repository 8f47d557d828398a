"""Tokens with topic and read/write limits, and TLS with and without client certificates."""
import json
import ssl

import pytest

from lance_net.protocol import (
    Ack, Authenticate, AuthenticateResponse, ConnectionClosed, CreateTopic, ErrorResponse,
    GetClusterStatus, Keepalive, ListTopics, TopicResponse,
)

from .conftest import BrokerFailed, make_certificates

TOKENS = [
    {"token": "root-secret", "name": "root"},
    {"token": "reader-secret", "name": "reader", "topics": ["pub-*"], "write": False},
    {"token": "writer-secret", "name": "writer", "topics": ["pub-a"], "read": False},
]


@pytest.fixture
def secured(broker_factory, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    return broker_factory({"auth": {"tokens_file": str(tokens)}})


def _login(broker, token: str):
    client = broker.client()
    assert client.request(Authenticate(token)) == AuthenticateResponse(True, "Authenticated")
    return client


def test_everything_but_authenticate_and_keepalive_needs_a_token(secured):
    with secured.client() as c:
        assert c.request(Keepalive()) == Keepalive()
        refused = c.request(CreateTopic("pub-a"))
        assert isinstance(refused, ErrorResponse) and refused.error_code == "AUTH_REQUIRED"
        assert c.request(GetClusterStatus()).error_code == "AUTH_REQUIRED"
        ingest = c.produce(1, 5, [b"x"])
        assert (ingest.error_code, ingest.batch_id) == ("AUTH_REQUIRED", 5)
        assert c.request(Authenticate("wrong")) == AuthenticateResponse(False, "Invalid token")
        assert c.request(ListTopics()).error_code == "AUTH_REQUIRED"
    assert secured.metric("lance_auth_failures_total") == 1


def test_tokens_limit_topics_and_access(secured):
    with _login(secured, "root-secret") as root:
        pub = root.create_topic("pub-a")["id"]
        private = root.create_topic("private")["id"]
        assert root.produce(pub, 1, [b"public"]) == Ack(1)
        assert root.produce(private, 1, [b"private"]) == Ack(1)
    with _login(secured, "reader-secret") as reader:
        assert [b.records for b in reader.fetch_all(pub)] == [[b"public"]]
        denied = reader.produce(pub, 2, [b"nope"])
        assert (denied.error_code, denied.batch_id) == ("ACCESS_DENIED", 2)
        assert reader.fetch(private, 0).error_code == "ACCESS_DENIED"
        assert [t["name"] for t in reader.request(ListTopics()).data["topics"]] == ["pub-a"]
        assert reader.request(CreateTopic("pub-b")).error_code == "ACCESS_DENIED"
    with _login(secured, "writer-secret") as writer:
        assert writer.produce(pub, 3, [b"from the writer"]) == Ack(3)
        assert writer.fetch(pub, 0).error_code == "ACCESS_DENIED"
        assert writer.produce(private, 3, [b"nope"]).error_code == "ACCESS_DENIED"
    with _login(secured, "root-secret") as root:
        assert [b.records for b in root.fetch_all(pub)] == [[b"public"], [b"from the writer"]]
        assert [b.records for b in root.fetch_all(private)] == [[b"private"]]


def test_inline_tokens_and_a_toml_tokens_file(broker_factory, tmp_path):
    (tmp_path / "more.toml").write_text('[[tokens]]\ntoken = "from-file"\ntopics = ["f-*"]\n')
    broker = broker_factory({"auth": {"tokens_file": str(tmp_path / "more.toml")}},
                            extra_toml='[[auth.tokens]]\ntoken = "inline"\nread = true\n')
    with _login(broker, "inline") as c:
        assert isinstance(c.request(CreateTopic("anything")), TopicResponse)
    with _login(broker, "from-file") as c:
        assert isinstance(c.request(CreateTopic("f-one")), TopicResponse)
        assert c.request(CreateTopic("other")).error_code == "ACCESS_DENIED"


def test_a_bad_tokens_file_stops_startup_with_its_name(broker_factory, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"token": "", "topics": ["*"]}]))
    broker = broker_factory({"auth": {"tokens_file": str(bad)}}, start=False)
    with pytest.raises(BrokerFailed, match="exited with 2"):
        broker.start()
    assert f"{bad}: tokens[0].token: expected a non-empty string" in broker.log()


def test_tls(broker_factory, tmp_path):
    certs = make_certificates(tmp_path / "certs")
    broker = broker_factory({"tls": {"cert": str(certs.server_cert), "key": str(certs.server_key)}})
    assert "tls on" in broker.log()
    with broker.client(ssl_context=certs.client_context()) as c:
        tid = c.create_topic("secret-stream")["id"]
        assert c.produce(tid, 1, [b"over tls"]) == Ack(1)
        assert [b.records for b in c.fetch_all(tid)] == [[b"over tls"]]
    with broker.client() as plain:               # LWP bytes into a TLS listener
        plain.send(Keepalive())
        assert plain.closed_by_server()
    with broker.client(ssl_context=certs.client_context()) as c:
        assert c.request(Keepalive()) == Keepalive()


def test_tls_with_client_certificates(broker_factory, tmp_path):
    certs = make_certificates(tmp_path / "certs")
    broker = broker_factory({"tls": {"cert": str(certs.server_cert), "key": str(certs.server_key),
                                     "client_ca": str(certs.ca)}})
    assert "client certificates required" in broker.log()
    assert _refused(broker, certs.client_context())
    with broker.client(ssl_context=certs.client_context(with_client_cert=True)) as c:
        assert c.create_topic("mutual")["name"] == "mutual"


def _refused(broker, context: ssl.SSLContext) -> bool:
    """Whether the TLS listener turns this client away (TLS 1.3 may only say so on first read)."""
    try:
        with broker.client(ssl_context=context) as client:
            return isinstance(client.request(Keepalive()), ConnectionClosed)
    except (ssl.SSLError, OSError):
        return True
