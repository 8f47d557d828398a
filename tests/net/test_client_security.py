"""The client with tokens and TLS (with and without a client certificate), and the CLI flags for them."""
import asyncio
import json

import pytest

from lance_net.client import Admin, AuthError, Consumer, Producer, tls_context

from .conftest import make_certificates
from .test_cli_client import json_out, lance_net

TOKENS = [
    {"token": "app-secret", "name": "app"},
    {"token": "reader-secret", "name": "reader", "topics": ["open-*"], "write": False},
]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """One broker with TLS, client certificates and tokens, for this module."""
    from .conftest import Broker

    root = tmp_path_factory.mktemp("secured")
    certs = make_certificates(root / "certs")
    tokens = root / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    broker = Broker(root / "broker", config={
        "tls": {"cert": str(certs.server_cert), "key": str(certs.server_key),
                "client_ca": str(certs.ca)},
        "auth": {"tokens_file": str(tokens)}})
    broker.start()
    yield broker, certs
    broker.kill()


def _tls(certs):
    return tls_context(str(certs.ca), cert_file=str(certs.client_cert),
                       key_file=str(certs.client_key))


def test_token_and_client_certificate_round_trip(secured):
    broker, certs = secured

    async def main():
        options = {"ssl": _tls(certs), "token": "app-secret"}
        async with Producer(broker.endpoint, "open-a", create_topic=True, **options) as producer:
            delivered = await producer.send(b"over tls")
        async with Consumer(broker.endpoint, "open-a", ssl=_tls(certs),
                            token="reader-secret") as consumer:
            records = await consumer.poll()
        return delivered, records

    delivered, records = run(main())
    assert [r.value for r in records] == [b"over tls"]
    assert records[0].offset == delivered.offset and records[0].sortkey == delivered.sortkey


def test_a_wrong_token_and_a_read_only_token_are_refused(secured):
    broker, certs = secured

    async def main():
        with pytest.raises(AuthError) as wrong:
            async with Admin(broker.endpoint, ssl=_tls(certs), token="guess") as admin:
                await admin.list_topics()
        with pytest.raises(AuthError) as read_only:
            async with Producer(broker.endpoint, "open-b", create_topic=True, ssl=_tls(certs),
                                token="reader-secret"):
                pass
        return wrong.value, read_only.value

    wrong, read_only = run(main())
    assert "Authenticate" in str(wrong)
    assert read_only.code == "ACCESS_DENIED"


def test_cli_flags_for_tls_and_tokens(secured):
    broker, certs = secured
    tls = ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert),
           "--tls-key", str(certs.client_key)]
    produced = json_out(lance_net(broker, "produce", "open-cli", "x", "--create", "--json",
                                  "--token", "app-secret", *tls))
    assert produced["records"] == 1
    status = json_out(lance_net(broker, "status", "--json", "--token", "app-secret", *tls))
    assert status["is_leader"] is True
    refused = lance_net(broker, "status", "--token", "nope", *tls, check=False)
    assert refused.returncode == 1 and b"Authenticate" in refused.stderr
