"""Topic administration, cluster status and Authenticate, as a connection answers them.

Owns the replies of those commands; the topics themselves are the store's, access rules `auth`'s.
"""
from __future__ import annotations

import logging

from lance_net.protocol import (
    Authenticate, AuthenticateResponse, ClusterStatusResponse, CreateTopic,
    CreateTopicWithRetention, DeleteTopic, GetClusterStatus, GetTopic, ListTopics, SetRetention,
    TopicResponse,
)
from lance_store.store import check_topic_name

from .auth import OPEN, WRITE
from .refusal import Refused

log = logging.getLogger("lance_net.server.admin")


def _create(conn, name: str, retention: dict | None):
    try:
        check_topic_name(name)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if not conn.grant.allows(name, WRITE):
        raise Refused.of("ACCESS_DENIED", f"token {conn.grant.name!r} may not create "
                                          f"topic {name!r}")
    existing = conn.broker.topic_named(name)
    if existing is not None:
        # Idempotent, as upstream's cluster mode: the existing topic, unchanged.
        return TopicResponse(existing.info())
    return _create_new(conn, name, retention)


async def _create_new(conn, name: str, retention: dict | None) -> TopicResponse:
    topic = await conn.broker.create_topic(name, retention)
    return TopicResponse(topic.info())


def create_topic(conn, command: CreateTopic):
    return _create(conn, command.name, None)


def create_topic_with_retention(conn, command: CreateTopicWithRetention):
    return _create(conn, command.name, {"max_age_secs": command.max_age_secs,
                                        "max_bytes": command.max_bytes})


def delete_topic(conn, command: DeleteTopic):
    topic = conn.broker.topic(command.topic_id)
    conn.require(topic, WRITE)
    return _delete(conn, topic)


async def _delete(conn, topic) -> TopicResponse:
    topic_id = await conn.broker.delete_topic(topic)
    return TopicResponse({"deleted": topic_id})


def list_topics(conn, command: ListTopics) -> TopicResponse:
    grant = conn.grant
    return TopicResponse({"topics": [t.info() for t in conn.broker.store.topics()
                                     if grant.sees(t.name)]})


def get_topic(conn, command: GetTopic) -> TopicResponse:
    topic = conn.broker.topic(command.topic_id)
    if not conn.grant.sees(topic.name):
        raise Refused.of("ACCESS_DENIED", f"token {conn.grant.name!r} may not see "
                                          f"topic {topic.name!r}")
    return TopicResponse(topic.info())


def set_retention(conn, command: SetRetention):
    topic = conn.broker.topic(command.topic_id)
    conn.require(topic, WRITE)
    return _set_retention(conn, topic, command.max_age_secs, command.max_bytes)


async def _set_retention(conn, topic, max_age_secs: int, max_bytes: int) -> TopicResponse:
    await conn.broker.set_retention(topic, max_age_secs, max_bytes)
    log.info("topic %s: retention max_age_secs=%d max_bytes=%d", topic.name, max_age_secs,
             max_bytes)
    return TopicResponse(topic.info())


def cluster_status(conn, command: GetClusterStatus) -> ClusterStatusResponse:
    return ClusterStatusResponse(conn.broker.cluster_status())


def authenticate(conn, command: Authenticate) -> AuthenticateResponse:
    tokens = conn.broker.tokens
    if not tokens.enabled:
        conn.grant = OPEN
        return AuthenticateResponse(True, "Authenticated (auth is off on this node)")
    grant = tokens.authenticate(command.token)
    conn.grant = grant
    if grant is None:
        conn.broker.metrics.auth_failures.inc()
        log.info("%s: Authenticate with an unknown token", conn.peer)
        return AuthenticateResponse(False, "Invalid token")
    return AuthenticateResponse(True, "Authenticated")


# command type -> (handler, barrier)
HANDLERS = {
    CreateTopic: (create_topic, True),
    CreateTopicWithRetention: (create_topic_with_retention, True),
    DeleteTopic: (delete_topic, True),
    ListTopics: (list_topics, False),
    GetTopic: (get_topic, False),
    SetRetention: (set_retention, True),
    GetClusterStatus: (cluster_status, False),
    Authenticate: (authenticate, False),
}
