"""Topic and cluster administration: create, list, get, delete, retention, cluster status, offsets.

Owns the meaning of the control commands for a client and finding a topic by name; the wire
belongs to `lance_net.protocol`, connections to `session`.
"""
from __future__ import annotations

from typing import Any

from lance_net.protocol import (
    ClusterStatusResponse, CreateTopic, CreateTopicWithRetention, DeleteTopic, GetClusterStatus,
    GetTopic, ListOffsets, ListTopics, OffsetsResponse, SetRetention, TopicResponse,
)

from .errors import UnexpectedReply, UnknownTopic
from .options import DEFAULT_ENDPOINT, ClientOptions, split_options
from .session import Session

TopicRef = int | str
"""A topic by id (int) or by name (str)."""


class Admin:
    """Administration of a cluster through one endpoint (following redirects to the leader).

    Topics are returned as the LWP topic JSON: {"id", "name", "created_at", "topic_epoch",
    "retention": {"max_age_secs", "max_bytes"}}. A retention value of 0 means no limit.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, options: ClientOptions | None = None,
                 **option_overrides: Any):
        self.options = split_options(options, option_overrides)
        if option_overrides:
            raise TypeError(f"Admin: unexpected arguments {sorted(option_overrides)}")
        self.session = Session(endpoint, self.options)

    async def __aenter__(self) -> Admin:
        await self.session.link()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    # ------------------------------------------------------------ topics

    async def create_topic(self, name: str, *, max_age_secs: int | None = None,
                           max_bytes: int | None = None) -> dict:
        """Create `name`, or return it when it exists (CreateTopic is idempotent)."""
        if max_age_secs is None and max_bytes is None:
            command = CreateTopic(name)
        else:
            command = CreateTopicWithRetention(name, max_age_secs or 0, max_bytes or 0)
        return _topic(await self.session.request(command))

    async def list_topics(self) -> list[dict]:
        data = _topic(await self.session.request(ListTopics()))
        return list(data.get("topics", [])) if isinstance(data, dict) else list(data)

    async def get_topic(self, topic: TopicRef) -> dict:
        if isinstance(topic, str):
            return await self.find_topic(topic)
        return _topic(await self.session.request(GetTopic(topic)))

    async def find_topic(self, name: str) -> dict:
        """The topic called `name`; a name made of digits that no topic has is taken as an id."""
        topics = await self.list_topics()
        for info in topics:
            if info.get("name") == name:
                return info
        if name.isdigit():
            return _topic(await self.session.request(GetTopic(int(name))))
        known = ", ".join(sorted(str(t.get("name")) for t in topics)) or "none"
        raise UnknownTopic(f"UNKNOWN_TOPIC: no topic named {name!r} (known: {known})",
                           "UNKNOWN_TOPIC", f"no topic named {name!r}",
                           endpoint=self.session.endpoint)

    async def topic_id(self, topic: TopicRef) -> int:
        if isinstance(topic, int):
            return topic
        return int((await self.find_topic(topic))["id"])

    async def delete_topic(self, topic: TopicRef) -> int:
        """Delete a topic; returns its id."""
        topic_id = await self.topic_id(topic)
        data = _topic(await self.session.request(DeleteTopic(topic_id), retry_on_loss=False))
        return int(data.get("deleted", topic_id)) if isinstance(data, dict) else topic_id

    async def set_retention(self, topic: TopicRef, *, max_age_secs: int = 0,
                            max_bytes: int = 0) -> dict:
        topic_id = await self.topic_id(topic)
        return _topic(await self.session.request(SetRetention(topic_id, max_age_secs, max_bytes)))

    async def resolve_topic(self, topic: TopicRef, *, create: bool = False) -> dict:
        """The topic's JSON; with create=True a missing name is created."""
        if isinstance(topic, str) and create:
            return await self.create_topic(topic)
        return await self.get_topic(topic)

    # ------------------------------------------------------------ offsets and cluster

    async def list_offsets(self, topic: TopicRef, timestamp_ns: int) -> OffsetsResponse:
        """(offset, low, high) for a time; ListOffsets.EARLIEST / LATEST for the ends."""
        topic_id = await self.topic_id(topic)
        return await self.session.request(ListOffsets(topic_id, timestamp_ns))

    async def cluster_status(self) -> dict:
        reply = await self.session.request(GetClusterStatus())
        if type(reply) is not ClusterStatusResponse:
            raise UnexpectedReply("GetClusterStatus", "ClusterStatusResponse", reply)
        return reply.data


def _topic(reply) -> Any:
    if type(reply) is not TopicResponse:
        raise UnexpectedReply("topic request", "TopicResponse", reply)
    return reply.data
