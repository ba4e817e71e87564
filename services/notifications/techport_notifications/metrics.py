from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFICATIONS = Counter(
    "techport_notifications_total",
    "Notifications finished, by outcome (sent, suppressed, failed).",
    ["outcome", "template"],
)
SEND_RETRIES = Counter(
    "techport_notifications_send_retries_total", "SMTP attempts that failed and will be retried."
)
DIGEST_SIZE = Histogram(
    "techport_notifications_digest_items", "Items reported in one email.", buckets=(1, 2, 3, 5, 10, 20, 50)
)
SEND_SECONDS = Histogram("techport_notifications_send_seconds", "Time to hand one email to the SMTP server.")
DUE = Gauge(
    "techport_notifications_due",
    "Notifications due and not yet claimed by a sender, at its last pass: the backlog of email.",
)
