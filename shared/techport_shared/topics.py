"""The topic catalog (contract section 1), in one place: names, what keys them, which types they carry.

Partition counts come from settings (`KafkaSettings`); topics are created by `ensure_topics`, never by a
subscriber starting up.
"""

from __future__ import annotations

from dataclasses import dataclass

from techport_shared.events import ce_type
from techport_shared.settings import KafkaSettings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    written_by: str
    key: str
    types: tuple[str, ...]

    def partitions(self, settings: KafkaSettings) -> int:
        return settings.topic_partitions.get(self.name, settings.topic_partitions_default)


PARTNER_INGRESS = TopicSpec(
    "techport.partner-ingress.v1",
    "partner systems",
    "subject id",
    tuple(
        ce_type(t)
        for t in (
            "organisation.registered",
            "student.registered",
            "student.updated",
            "vacancy.posted",
            "vacancy.closed",
        )
    ),
)
PARTNER_INGRESS_REJECTED = TopicSpec(
    "techport.partner-ingress.rejected.v1",
    "members",
    "partner's organisation id",
    (ce_type("ingress.rejected"),),
)
ORGANISATIONS = TopicSpec(
    "techport.organisations.v1",
    "members",
    "organisation id",
    (ce_type("organisation.registered"), ce_type("organisation.updated")),
)
STUDENTS = TopicSpec(
    "techport.students.v1",
    "members",
    "student id",
    (ce_type("student.registered"), ce_type("student.updated"), ce_type("student.erased")),
)
VACANCIES = TopicSpec(
    "techport.vacancies.v1",
    "members",
    "vacancy id",
    (ce_type("vacancy.posted"), ce_type("vacancy.updated"), ce_type("vacancy.closed")),
)
MATCHES = TopicSpec(
    "techport.matches.v1", "matching", "student id", (ce_type("match.found"), ce_type("match.withdrawn"))
)
PARTNERSHIPS = TopicSpec(
    "techport.partnerships.v1",
    "matching",
    "partnership id",
    (ce_type("partnership.proposed"), ce_type("partnership.formed")),
)
NOTIFICATIONS = TopicSpec(
    "techport.notifications.v1",
    "notifications",
    "recipient id",
    (ce_type("notification.sent"), ce_type("notification.suppressed"), ce_type("notification.failed")),
)
DLQ = TopicSpec("techport.dlq.v1", "any consumer", "original key", ())

CATALOG: tuple[TopicSpec, ...] = (
    PARTNER_INGRESS,
    PARTNER_INGRESS_REJECTED,
    ORGANISATIONS,
    STUDENTS,
    VACANCIES,
    MATCHES,
    PARTNERSHIPS,
    NOTIFICATIONS,
    DLQ,
)
BY_NAME = {topic.name: topic for topic in CATALOG}


def topic_for_type(type_: str) -> TopicSpec:
    """The canonical topic an event type is published on (ingress types resolve to the member topics)."""
    for topic in CATALOG:
        if topic is not PARTNER_INGRESS and type_ in topic.types:
            return topic
    raise LookupError(f"no topic carries {type_}")
