"""Who may do what on Kafka: the ACLs of each service's and each partner's credentials, in one place.

Kubernetes grants them with Strimzi's KafkaUsers (deploy/k8s/base/kafka/users.yaml; the deploy tests check the
manifests against this module); locally `techport infra kafka --secure` and the partner onboarding of the
development tooling grant them with Kafka's own ACL command. A partner writes only its own ingress topic and
reads only its own rejected topic; each service reads and writes only what it consumes and publishes.
"""

from __future__ import annotations

from dataclasses import dataclass

from techport_shared.topics import (
    DLQ,
    MATCHES,
    NOTIFICATIONS,
    ORGANISATIONS,
    PARTNER_PREFIX,
    PARTNERSHIPS,
    RETIRED_INGRESS,
    STUDENTS,
    VACANCIES,
    partner_topics,
)


@dataclass(frozen=True)
class Grant:
    resource: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]  # Kafka's operation names: Read, Write, Describe, Create, Delete
    pattern: str = "literal"  # or "prefix"


def _reads(*topics: str) -> list[Grant]:
    return [Grant("topic", topic, ("Read", "Describe")) for topic in topics]


def _writes(*topics: str) -> list[Grant]:
    return [Grant("topic", topic, ("Write", "Describe")) for topic in topics]


SERVICE_GRANTS: dict[str, tuple[Grant, ...]] = {
    "members": (
        # Every partner's topics: read the ingress topics (by pattern), write the rejected ones, create both
        # at registration, and delete the ingress records it has handled (DeleteRecords).
        Grant("topic", PARTNER_PREFIX, ("Read", "Write", "Describe", "Create", "Delete"), "prefix"),
        *_reads(RETIRED_INGRESS.name),
        *_writes(ORGANISATIONS.name, STUDENTS.name, VACANCIES.name, DLQ.name),
        Grant("group", "members-ingress", ("Read", "Describe"), "prefix"),
    ),
    "matching": (
        *_reads(ORGANISATIONS.name, STUDENTS.name, VACANCIES.name),
        *_writes(MATCHES.name, PARTNERSHIPS.name, DLQ.name),
        Grant("group", "matching", ("Read", "Describe")),
    ),
    "notifications": (
        *_reads(ORGANISATIONS.name, STUDENTS.name, VACANCIES.name, MATCHES.name, PARTNERSHIPS.name),
        *_writes(NOTIFICATIONS.name, DLQ.name),
        Grant("group", "notifications", ("Read", "Describe")),
    ),
}


def partner_principal(organisation_id: str) -> str:
    """The SCRAM user name of a partner: `partner-<organisation id>`."""
    return f"partner-{organisation_id}"


def partner_grants(organisation_id: str) -> tuple[Grant, ...]:
    topics = partner_topics(organisation_id)
    return (
        *_writes(topics.ingress),
        *_reads(topics.rejected),
        # Its own consumer groups, to read its rejections with committed offsets.
        Grant("group", partner_principal(organisation_id), ("Read", "Describe"), "prefix"),
    )
