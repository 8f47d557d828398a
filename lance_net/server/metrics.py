"""The broker's Prometheus metrics, in a registry of its own (one per process).

Owns metric names and labels; the code that does the work increments them, and the
per-topic and per-consumer gauges are read from the store at scrape time.
"""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SIZE_BUCKETS = tuple(1 << n for n in range(8, 26, 2))  # 256 B .. 16 MiB

CONTENT_TYPE = CONTENT_TYPE_LATEST


class BrokerMetrics:
    def __init__(self) -> None:
        # The *_created series double the output and tell nothing a restart time does not.
        disable_created_metrics()
        r = self.registry = CollectorRegistry(auto_describe=True)
        # ingest
        self.ingest_batches = Counter("lance_ingest_batches", "Batches made durable",
                                      ["topic"], registry=r)
        self.ingest_records = Counter("lance_ingest_records", "Records made durable",
                                      ["topic"], registry=r)
        self.ingest_bytes = Counter("lance_ingest_bytes", "TLV payload bytes made durable",
                                    ["topic"], registry=r)
        self.ingest_refused = Counter("lance_ingest_refused", "Ingest batches refused, by error code",
                                      ["code"], registry=r)
        self.ingest_duplicates = Counter("lance_ingest_duplicates",
                                         "Idempotent-producer batches acknowledged without a write",
                                         registry=r)
        self.batch_size_bytes = Histogram("lance_ingest_batch_size_bytes",
                                          "Payload size of accepted ingest batches",
                                          buckets=SIZE_BUCKETS, registry=r)
        self.batch_latency_seconds = Histogram(
            "lance_batch_latency_seconds", "From an Ingest frame received to its batch durable",
            buckets=LATENCY_BUCKETS, registry=r)
        self.ack_latency_seconds = Histogram(
            "lance_ack_latency_seconds",
            "From an Ingest frame received to its Ack handed to the socket (in order)",
            buckets=LATENCY_BUCKETS, registry=r)
        self.group_write_seconds = Histogram(
            "lance_group_write_seconds", "One group commit: write plus fdatasync",
            buckets=LATENCY_BUCKETS, registry=r)
        self.group_batches = Histogram("lance_group_batches", "Batches per group commit",
                                       buckets=GROUP_BUCKETS, registry=r)
        self.write_failures = Counter("lance_write_failures", "Group writes the kernel refused",
                                      registry=r)
        # fetch
        self.fetch_requests = Counter("lance_fetch_requests", "Fetch requests answered with data "
                                      "or an empty response", ["topic"], registry=r)
        self.fetch_records = Counter("lance_fetch_records", "Records sent in Fetch responses",
                                     ["topic"], registry=r)
        self.fetch_bytes = Counter("lance_fetch_bytes", "Batch bytes sent in Fetch responses",
                                   ["topic"], registry=r)
        self.fetch_errors = Counter("lance_fetch_errors", "Fetch requests refused, by error code",
                                    ["code"], registry=r)
        # connections
        self.connections = Gauge("lance_connections", "Open client connections", registry=r)
        self.connections_accepted = Counter("lance_connections_accepted",
                                            "Client connections accepted", registry=r)
        self.connections_refused = Counter("lance_connections_refused",
                                           "Connections closed at once: over max_connections",
                                           registry=r)
        self.idle_closed = Counter("lance_connections_idle_closed",
                                   "Connections closed after idle_timeout_s without a frame",
                                   registry=r)
        self.protocol_errors = Counter(
            "lance_protocol_errors",
            "Connections closed for a framing fault (checksum, magic, length, truncation)",
            ["reason"], registry=r)
        self.invalid_commands = Counter("lance_invalid_commands",
                                        "Control frames answered 'Invalid client command'",
                                        registry=r)
        self.backpressure_events = Counter("lance_backpressure_events",
                                           "Backpressure frames sent", registry=r)
        self.auth_failures = Counter("lance_auth_failures", "Authenticate with an unknown token",
                                     registry=r)
        self.retention_deleted = Counter("lance_retention_segments_deleted",
                                         "Sealed segments deleted by retention", ["topic"],
                                         registry=r)
        self.ready = Gauge("lance_ready", "1 when the node accepts clients", registry=r)
        self._topic_children: dict[str, tuple] = {}

    def topic_labels(self, topic: str) -> tuple:
        """(batches, records, bytes) ingest counters of one topic, looked up once."""
        found = self._topic_children.get(topic)
        if found is None:
            found = (self.ingest_batches.labels(topic), self.ingest_records.labels(topic),
                     self.ingest_bytes.labels(topic))
            self._topic_children[topic] = found
        return found

    def watch(self, topics: Callable[[], Iterable], offsets: Callable[[], Iterable]) -> None:
        """Report watermarks and consumer offsets, read when scraped.

        `topics()` gives live Topic objects; `offsets()` gives (topic_id, topic name,
        consumer_id, committed offset).
        """
        self.registry.register(_StoreCollector(topics, offsets))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCollector:
    def __init__(self, topics, offsets):
        self._topics = topics
        self._offsets = offsets

    def describe(self):
        return []

    def collect(self):
        high = GaugeMetricFamily("lance_topic_high_watermark",
                                 "End of the last durable batch (topic byte offset)", labels=["topic"])
        low = GaugeMetricFamily("lance_topic_low_watermark",
                                "Start of the oldest retained segment", labels=["topic"])
        highs = {}
        for topic in self._topics():
            highs[topic.id] = topic.high_watermark
            high.add_metric([topic.name], topic.high_watermark)
            low.add_metric([topic.name], topic.low_watermark)
        committed = GaugeMetricFamily("lance_consumer_committed_offset",
                                      "Committed offset of a consumer", labels=["topic", "consumer"])
        lag = GaugeMetricFamily("lance_consumer_lag_bytes",
                                "High watermark minus committed offset", labels=["topic", "consumer"])
        for topic_id, name, consumer, offset in self._offsets():
            if topic_id not in highs:
                continue
            committed.add_metric([name, str(consumer)], offset)
            lag.add_metric([name, str(consumer)], max(highs[topic_id] - offset, 0))
        yield from (high, low, committed, lag)
