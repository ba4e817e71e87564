"""Services authenticate to Kafka with SCRAM-SHA-512 when KAFKA_SECURITY_PROTOCOL says so, as they do against
Strimzi in Kubernetes: a real broker with a SCRAM listener, the right password and a wrong one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from techport_dev.kafka import LocalKafkaCluster
from techport_shared.envelope import KafkaRecord
from techport_shared.kafka import BrokerPublisher, create_broker, ensure_topics
from techport_shared.settings import KafkaSettings
from techport_shared.topics import STUDENTS

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def scram_cluster() -> Iterator[LocalKafkaCluster]:
    cluster = LocalKafkaCluster(scram_users={"members": "members-password"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(graceful=False)


def _settings(cluster: LocalKafkaCluster, password: str) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=cluster.sasl_bootstrap_servers,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="members",
        kafka_sasl_password=password,
    )


async def test_a_service_broker_and_the_tools_authenticate_with_scram(
    scram_cluster: LocalKafkaCluster,
) -> None:
    settings = _settings(scram_cluster, "members-password")
    assert await ensure_topics(settings, (STUDENTS,))  # the admin client authenticates too
    broker = create_broker(settings, "members")
    await broker.start()
    try:
        await BrokerPublisher(broker).send(STUDENTS.name, KafkaRecord(b"stu-1", b"{}", {"ce_id": b"1"}))
    finally:
        await broker.stop()
    consumer = AIOKafkaConsumer(
        STUDENTS.name, **settings.client_options(), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert record.key == b"stu-1"


async def test_a_wrong_password_is_refused(scram_cluster: LocalKafkaCluster) -> None:
    settings = _settings(scram_cluster, "not-the-password")
    broker = create_broker(settings, "members")
    with pytest.raises(KafkaError) as refused:
        await asyncio.wait_for(broker.start(), timeout=60)
    await broker.stop()
    # aiokafka reports it as a failed bootstrap; the broker says why.
    assert "bootstrap" in str(refused.value)
    log = scram_cluster.nodes[0].log_path.read_text(errors="replace")
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in log
