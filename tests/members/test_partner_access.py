"""Partners are who their credentials say, on a real broker with SASL/SCRAM and the standard KRaft authorizer:
members runs with its own credentials and only its grants; each partner may write only its own ingress topic
and read only its own rejected topic; an event on a partner's topic that speaks for another organisation is
rejected to the sender and changes nothing of the other's; the retired shared topic stores nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from techport_dev.access import grant_services, onboard_partner_access
from techport_dev.kafka import LocalKafkaCluster
from techport_members.main import build
from techport_members.settings import MembersSettings
from techport_shared.envelope import from_record, to_binary
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, issue_token
from techport_shared.kafka import ensure_topics, plain_producer
from techport_shared.settings import ConsumerSettings, KafkaSettings
from techport_shared.topics import RETIRED_INGRESS, partner_topics

from tests.members.conftest import SECRET, organisation_data, partner_event, student_data
from tests.serving import serve
from tests.waiting import eventually

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def secure_cluster() -> Iterator[LocalKafkaCluster]:
    cluster = LocalKafkaCluster(acls=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(graceful=False)


def _as(cluster: LocalKafkaCluster, user: str, password: str) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=cluster.sasl_bootstrap_servers,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=user,
        kafka_sasl_password=password,
        topic_partitions_default=1,
    )


async def _send(settings: KafkaSettings, topic: str, event) -> None:
    producer = plain_producer(settings)
    await producer.start()
    try:
        record = to_binary(event)
        await producer.send_and_wait(topic, record.value, key=record.key, headers=record.header_list())
    finally:
        await producer.stop()


async def _read(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(**settings.client_options(), group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=int(timeout_s * 1000))
        return [from_record(r.key, r.value, r.headers) for r in batch.get(tp, [])]
    finally:
        await consumer.stop()


async def _refused_to_read(settings: KafkaSettings, topic: str) -> None:
    """The broker will not even describe the topic (Describe comes before Read): no partition to fetch."""
    client = plain_producer(settings)
    await client.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(client.partitions_for(topic), timeout=30)
    finally:
        await client.stop()


async def test_a_partner_acts_only_as_itself_on_a_broker_with_acls(
    secure_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    admin = KafkaSettings(
        kafka_bootstrap_servers=secure_cluster.bootstrap_servers, topic_partitions_default=1
    )
    await ensure_topics(admin)
    grant_services(secure_cluster, {"members": "members-secret"})
    settings = MembersSettings(
        database_url=f"sqlite:///{tmp_path / 'members.db'}",
        identity_secret=SECRET,
        kafka=_as(secure_cluster, "members", "members-secret"),
        consumer_group=f"members-ingress-{uuid.uuid4().hex[:6]}",
        consumer=ConsumerSettings(max_attempts=2, backoff_initial_s=0.05),
    )
    app, _runtime = build(settings)
    school_a, school_b = "acl-school-a", "acl-school-b"
    async with serve(app) as url:
        headers = {IDENTITY_HEADER: issue_token(OPERATOR, SECRET)}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as operator:
            for school in (school_a, school_b):
                registered = await operator.post("/organisations", json=organisation_data(school, "school"))
                # Members created the topics, with its own credentials (its grants allow that, nothing more).
                assert registered.status_code == 201, registered.text
                assert registered.json()["ingress_topic"] == partner_topics(school).ingress
        a_user, a_password = onboard_partner_access(secure_cluster.bootstrap_servers, school_a)
        as_a = _as(secure_cluster, a_user, a_password)
        a, b = partner_topics(school_a), partner_topics(school_b)

        # The broker refuses A on B's topics.
        with pytest.raises((TopicAuthorizationFailedError, KafkaError)):
            await asyncio.wait_for(
                _send(
                    as_a,
                    b.ingress,
                    partner_event(school_b, "student.registered", student_data("x", school_b), "x"),
                ),
                timeout=30,
            )
        await _refused_to_read(as_a, b.rejected)
        await _refused_to_read(as_a, RETIRED_INGRESS.name)
        await _refused_to_read(as_a, b.ingress)

        # On its own topic, A speaking as B is rejected to A, and nothing of B's changes.
        forged = partner_event(school_b, "student.registered", student_data("b-stu-1", school_b), "b-stu-1")
        await _send(as_a, a.ingress, forged)

        async def rejected() -> list:
            return [e for e in await _read(as_a, a.rejected, 2.0) if e.data["ce_id"] == forged.id]

        [rejection] = await eventually(rejected, timeout_s=60)
        assert {e["field"] for e in rejection.data["errors"]} == {"ce_source"}
        # B's (ce_source, ce_id) is not used up: B's own event with that very id is taken.
        genuine = replace(forged, id=forged.id)  # the same event, now on B's own topic
        await _send(admin, b.ingress, genuine)
        # What the retired shared topic gets is not stored.
        retired = partner_event(school_b, "student.registered", student_data("b-stu-2", school_b), "b-stu-2")
        await _send(admin, RETIRED_INGRESS.name, retired)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as operator:

            async def stored() -> bool:
                return (await operator.get("/students/b-stu-1")).status_code == 200

            await eventually(stored, timeout_s=60)
            await asyncio.sleep(2.0)
            assert (await operator.get("/students/b-stu-2")).status_code == 404
        assert [e for e in await _read(admin, b.rejected, 1.0) if e.data["ce_id"] == forged.id] == []
