"""Prometheus metrics of the messaging layer, the same names and labels in every service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "Records of an event type this consumer does not know.",
    ["service", "type"],
)
HANDLER_SECONDS = Histogram(
    "techport_event_handler_seconds", "Time to handle one record, retries included.", ["service", "topic"]
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
CONSUMER_LAG = Gauge(
    "techport_consumer_lag",
    "Records on a partition after this consumer's last committed offset (log end minus committed).",
    ["service", "group", "topic", "partition"],
)
