"""The Kafka broker as every service sets it up, publishing raw records, and topic creation in one place."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from techport_shared.envelope import KafkaRecord
from techport_shared.logging import get_logger
from techport_shared.settings import KafkaSettings
from techport_shared.topics import CATALOG, TopicSpec, partner_topics

# What the broker (or the producer, before it asks) refuses for good: sending it again cannot help, unlike an
# outage. The outbox parks such an event; the dead-letter writer sends a smaller record instead.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
)


class PermanentlyRefused(Exception):
    """The broker refuses this record for good; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


log = get_logger(__name__)


def create_broker(settings: KafkaSettings, client_id: str) -> KafkaBroker:
    """A broker that never loses a record on our side:

    - MANUAL acks: our consumer commits each offset itself after the record was handled or dead-lettered
      (FastStream's default ACK_FIRST auto-commits before handling: at-most-once).
    - No topic auto-creation by subscribers (it would make one partition); `ensure_topics` creates them.
    - acks=all; not aiokafka's idempotent producer. After a broker was away for longer than the request
      timeout, that producer can fail a batch after it took the batch's sequence number; the broker then
      refuses every later batch as out of order and the producer stays broken until the process restarts
      (aio-libs/aiokafka#1017; tests/shared/test_publisher_after_broker_restart.py shows it). Idempotence
      is not what keeps our events right anyway: the outbox relay and the dead-letter writer publish one
      record at a time and wait for the broker's ack, so a retry cannot overtake a later record, and a
      record that a retry writes twice is dropped by its consumers' processed-messages table.
    """
    return KafkaBroker(
        # A list: FastStream hands a string to aiokafka as one host, so "a:9092,b:9092" would not resolve.
        [server.strip() for server in settings.kafka_bootstrap_servers.split(",")],
        security=settings.security(),
        client_id=client_id,
        ack_policy=AckPolicy.MANUAL,
        allow_auto_create_topics=False,
        **_producer_options(settings),
        **_client_options(settings),
    )


def _producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """How every producer of ours publishes (see `create_broker` for why it is not idempotent)."""
    timeout_ms = settings.kafka_request_timeout_ms
    return {
        "acks": "all",
        "enable_idempotence": False,
        "request_timeout_ms": timeout_ms,
        # aiokafka keeps one open batch per partition, and a send that finds it full waits until it is sent:
        # with the default 16 KiB, a relay pass of hundreds of records woke every waiting send each time a
        # batch went (a tenth of members' CPU). A batch stays under the broker's 1 MiB limit: it takes no
        # record that would carry it past 512 KiB, and a record of up to 1 MB goes in a batch of its own.
        "max_batch_size": 512 * 1024,
    }


def _client_options(settings: KafkaSettings) -> dict[str, Any]:
    return {"metadata_max_age_ms": settings.kafka_metadata_max_age_ms}


def plain_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    """An aiokafka producer for tools outside a service (the CLI, tests), set up as `create_broker`'s is."""
    return AIOKafkaProducer(**settings.client_options(), **_producer_options(settings))


class RecordPublisher(Protocol):
    async def send(self, topic: str, record: KafkaRecord) -> None:
        """Publish and wait until the broker acknowledged the record; PermanentlyRefused if it never will."""


class BrokerPublisher:
    """Publishes raw records (our CloudEvents headers as they are) through a FastStream broker."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def send(self, topic: str, record: KafkaRecord) -> None:
        try:
            await self._broker.publish(
                record.value,
                topic=topic,
                key=record.key,
                headers=record.str_headers(),
            )
        except PERMANENT_ERRORS as exc:
            raise PermanentlyRefused(f"{type(exc).__name__}: {exc}"[:500]) from exc


async def ensure_topics(
    settings: KafkaSettings, topics: tuple[TopicSpec, ...] = CATALOG, timeout_s: float = 60.0
) -> list[str]:
    """Create the catalog's topics with their partition counts; existing topics are left alone.

    Returns the names created. Retries while the cluster is still coming up.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(**settings.client_options(), request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            if not missing:
                return []
            new = [
                NewTopic(
                    name=t.name,
                    num_partitions=t.partitions(settings),
                    replication_factor=settings.topic_replication_factor,
                    topic_configs={
                        "min.insync.replicas": str(settings.topic_min_insync_replicas),
                        **t.configs,
                    },
                )
                for t in missing
            ]
            response = await admin.create_topics(new)
            created = []
            for name, code, *_ in getattr(
                response, "topic_errors", getattr(response, "topic_error_codes", [])
            ):
                if code in (0, TopicAlreadyExistsError.errno):
                    created.append(name)
                else:
                    raise RuntimeError(f"creating topic {name} failed with error code {code}")
            log.info("topics created", topics=created)
            return created
        except Exception as exc:  # the cluster may still be starting: retry until the deadline
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("waiting for the cluster to create topics", error=str(exc))
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


async def ensure_partner_topics(
    settings: KafkaSettings, organisation_id: str, timeout_s: float = 30.0
) -> list[str]:
    """A registered organisation's own ingress and rejected topics, with the catalog's settings (the names of
    those created now)."""
    return await ensure_topics(settings, partner_topics(organisation_id).specs(), timeout_s)


async def delete_handled(settings: KafkaSettings, offsets: dict[TopicPartition, int]) -> None:
    """Delete records up to (not including) each offset: what a consumer has handled and committed (Kafka's
    DeleteRecords). Partners' records are transport, not storage."""
    if not offsets:
        return
    admin = AIOKafkaAdminClient(**settings.client_options(), request_timeout_ms=10_000)
    try:
        await admin.start()
        await admin.delete_records({tp: RecordsToDelete(offset) for tp, offset in offsets.items()})
    finally:
        await admin.close()


# --- aiokafka's fetcher, stopped ----------------------------------------------------------------------------
_fetcher_close = Fetcher.close


async def _close_fetcher(self: Fetcher) -> None:
    """aiokafka's `Fetcher.close`, after cancelling the fetch routine until it has ended.

    When the group assignment goes (as it does on a stop: the consumer leaves its group), the routine cancels
    its own fetches and awaits them with CancelledError suppressed. A stop's cancellation that lands just then
    is swallowed with theirs, and the routine goes on to wait for an assignment that never comes: the stop,
    and the service's shutdown, hang (seen in the suite: a members test's server did not stop in 30 s, its
    fetch routine `cancelling` at `await waiter`). A second cancellation ends it there."""
    task = self._fetch_task
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    await _fetcher_close(self)


Fetcher.close = _close_fetcher
