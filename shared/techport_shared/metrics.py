"""Prometheus metrics of the messaging layer, the same names and labels in every service.

Labels stay bounded whatever partners send: an event type we do not know is counted as `unknown`, and every
partner's own ingress or rejected topic under one label (`partner-ingress`, `partner-rejected`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from techport_shared.events import EVENT_MODELS
from techport_shared.topics import partner_topic_kind


def type_label(event_type: str | None) -> str:
    return event_type if event_type in EVENT_MODELS else "unknown"


def topic_label(topic: str) -> str:
    kind = partner_topic_kind(topic)
    return f"partner-{kind}" if kind else topic


EVENTS_CONSUMED = Counter(
    "techport_events_consumed_total",
    "Records a consumer finished with, by outcome (handled, duplicate, ignored, dead_lettered, rejected).",
    ["service", "topic", "type", "outcome"],
)
CONSUMER_RETRIES = Counter(
    "techport_consumer_retries_total", "Handler attempts that failed and were retried.", ["service", "topic"]
)
DLQ_RECORDS = Counter(
    "techport_dlq_records_total", "Records sent to the dead-letter topic.", ["service", "topic", "error"]
)
UNKNOWN_EVENT_TYPES = Counter(
    "techport_unknown_event_types_total",
    "Records of an event type this consumer does not know (one label for all of them: partners choose them).",
    ["service"],
)
HANDLER_SECONDS = Histogram(
    "techport_event_handler_seconds",
    "Time to handle a batch of records in its transaction (or one record, where a batch is handled one at a"
    " time), retries included.",
    ["service", "topic"],
)
CONSUMER_BATCH_RECORDS = Histogram(
    "techport_consumer_batch_records",
    "Records in each batch a consumer handled in one transaction (CONSUMER_BATCH_SIZE at most).",
    ["service", "topic"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
OUTBOX_PUBLISHED = Counter(
    "techport_outbox_published_total", "Events the outbox relay published.", ["service", "topic"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "techport_outbox_publish_failures_total", "Outbox publish attempts that failed.", ["service"]
)
OUTBOX_BACKLOG = Gauge("techport_outbox_backlog", "Events in the outbox not yet published.", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "techport_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event.", ["service"]
)
OUTBOX_PARKED = Gauge(
    "techport_outbox_parked",
    "Outbox events the broker refused for good (too large, invalid), parked with their reason.",
    ["service"],
)
CONSUMER_LAG = Gauge(
    "techport_consumer_lag",
    "Records on a partition after this consumer's last committed offset (log end minus committed).",
    ["service", "group", "topic", "partition"],
)
