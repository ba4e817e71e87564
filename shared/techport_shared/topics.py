"""The topic catalog (contract section 1), in one place: names, what keys them, which types they carry, how
long they keep records; and the rule that names each partner's own ingress and rejected topics.

Partition counts come from settings (`KafkaSettings`); topics are created by `ensure_topics`, never by a
subscriber starting up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from techport_shared.events import ce_type
from techport_shared.settings import KafkaSettings

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    written_by: str
    key: str
    types: tuple[str, ...]
    # Topic configs beyond the cluster's defaults: how long records are kept (docs/privacy.md).
    configs: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def partitions(self, settings: KafkaSettings) -> int:
        return settings.topic_partitions.get(self.name, settings.topic_partitions_default)


PARTNER_TYPES = tuple(
    ce_type(t)
    for t in (
        "organisation.registered",
        "student.registered",
        "student.updated",
        "vacancy.posted",
        "vacancy.closed",
    )
)

# --- each partner's own topics ------------------------------------------------------------------------------
# `techport.partner.<organisation id, escaped>.ingress.v1` and `....rejected.v1`. Organisation ids are
# [A-Za-z0-9._:-]; topic names allow [A-Za-z0-9._-], and a `.` would collide with a `_` in Kafka's metric
# names. So the id is escaped with `_` (`_` -> `__`, `.` -> `_d`, `:` -> `_c`; letters, digits and `-` stay):
# the escaped id holds no `.`, the rule is one-to-one, and `partner_of` reads the id back.
PARTNER_PREFIX = "techport.partner."
_ESCAPES = {"_": "__", ".": "_d", ":": "_c"}
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}
_PARTNER_TOPIC = re.compile(r"^techport\.partner\.((?:[A-Za-z0-9-]|_[_dc])+)\.(ingress|rejected)\.v1$")
PARTNER_INGRESS_PATTERN = r"^techport\.partner\.(?:[A-Za-z0-9-]|_[_dc])+\.ingress\.v1$"
# Partners' records are transport, not storage: members deletes what it has handled; this is the backstop.
PARTNER_INGRESS_CONFIGS = {"retention.ms": str(HOUR_MS)}
PARTNER_REJECTED_CONFIGS = {"retention.ms": str(7 * DAY_MS)}


def _escape(organisation_id: str) -> str:
    return "".join(_ESCAPES.get(char, char) for char in organisation_id)


def _unescape(escaped: str) -> str:
    out, chars = [], iter(escaped)
    for char in chars:
        out.append(_UNESCAPES[next(chars)] if char == "_" else char)
    return "".join(out)


@dataclass(frozen=True)
class PartnerTopics:
    organisation_id: str
    ingress: str
    rejected: str

    def specs(self) -> tuple[TopicSpec, TopicSpec]:
        return (
            TopicSpec(
                self.ingress, self.organisation_id, "subject id", PARTNER_TYPES, PARTNER_INGRESS_CONFIGS
            ),
            TopicSpec(
                self.rejected,
                "members",
                "partner's organisation id",
                (ce_type("ingress.rejected"),),
                PARTNER_REJECTED_CONFIGS,
            ),
        )


def partner_topics(organisation_id: str) -> PartnerTopics:
    escaped = _escape(organisation_id)
    return PartnerTopics(
        organisation_id, f"{PARTNER_PREFIX}{escaped}.ingress.v1", f"{PARTNER_PREFIX}{escaped}.rejected.v1"
    )


def partner_of(topic: str) -> str | None:
    """The organisation whose ingress or rejected topic this is, or None."""
    match = _PARTNER_TOPIC.match(topic)
    return _unescape(match.group(1)) if match else None


def partner_topic_kind(topic: str) -> str | None:
    """`ingress` or `rejected` for a partner's own topic, else None."""
    match = _PARTNER_TOPIC.match(topic)
    return match.group(2) if match else None


# --- the catalog --------------------------------------------------------------------------------------------
# Version 1's shared ingress, retired: members reads it only to count and name who still writes there, and
# stores nothing of it. Nobody may write it (no ACL), and it keeps what was written for an hour.
RETIRED_INGRESS = TopicSpec(
    "techport.partner-ingress.v1",
    "nobody (retired in contract version 2)",
    "subject id",
    PARTNER_TYPES,
    {"retention.ms": str(HOUR_MS)},
)
# The platform's own topics keep a week: enough to replay after an outage (services keep their own copies).
# A student's personal fields on them are sealed (sealing.py): erasure reaches every copy at once.
WEEK = {"retention.ms": str(7 * DAY_MS)}
ORGANISATIONS = TopicSpec(
    "techport.organisations.v1",
    "members",
    "organisation id",
    (ce_type("organisation.registered"), ce_type("organisation.updated")),
    WEEK,
)
STUDENTS = TopicSpec(
    "techport.students.v1",
    "members",
    "student id",
    (ce_type("student.registered"), ce_type("student.updated"), ce_type("student.erased")),
    WEEK,
)
VACANCIES = TopicSpec(
    "techport.vacancies.v1",
    "members",
    "vacancy id",
    (ce_type("vacancy.posted"), ce_type("vacancy.updated"), ce_type("vacancy.closed")),
    WEEK,
)
MATCHES = TopicSpec(
    "techport.matches.v1",
    "matching",
    "student id",
    (ce_type("match.found"), ce_type("match.withdrawn")),
    WEEK,
)
PARTNERSHIPS = TopicSpec(
    "techport.partnerships.v1",
    "matching",
    "partnership id",
    (ce_type("partnership.proposed"), ce_type("partnership.formed")),
    WEEK,
)
NOTIFICATIONS = TopicSpec(
    "techport.notifications.v1",
    "notifications",
    "recipient id",
    (ce_type("notification.sent"), ce_type("notification.suppressed"), ce_type("notification.failed")),
    WEEK,
)
# Dead letters wait two weeks for an operator to replay them (docs/privacy.md).
DLQ = TopicSpec("techport.dlq.v1", "any consumer", "original key", (), {"retention.ms": str(14 * DAY_MS)})

CATALOG: tuple[TopicSpec, ...] = (
    RETIRED_INGRESS,
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
        if topic is not RETIRED_INGRESS and type_ in topic.types:
            return topic
    raise LookupError(f"no topic carries {type_}")
