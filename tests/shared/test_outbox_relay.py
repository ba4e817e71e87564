"""The relay publishes what was committed while the broker was down, once, when it is back; it lets the
service write while it waits for the broker; replicas' relays on one database publish each event once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from techport_dev.kafka import LocalKafkaCluster
from techport_shared.envelope import Envelope, from_record
from techport_shared.kafka import BrokerPublisher, create_broker
from techport_shared.outbox import OutboxRelay
from techport_shared.settings import KafkaSettings, OutboxSettings

from tests.kafka_helpers import fresh_topic, read_topic
from tests.shared.kit import open_database


@contextlib.asynccontextmanager
async def relaying(
    db: Any, kafka: KafkaSettings, name: str, outbox: OutboxSettings, replicas: int = 1
) -> AsyncIterator[list[OutboxRelay]]:
    """Relays on `db` (one per replica, each with a broker client of its own), running until the block ends;
    then stopped, and the database closed."""
    brokers = [create_broker(kafka, f"{name}-{n}") for n in range(replicas)]
    for broker in brokers:
        await broker.start()
    relays = [OutboxRelay("kit", db.sessions, db.tables, BrokerPublisher(b), outbox) for b in brokers]
    running = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        yield relays
    finally:
        for relay in relays:
            relay.stop()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for broker in brokers:
            await broker.stop()
        await db.close()


@pytest.fixture
def own_kafka(tmp_path: Path):
    """A broker of this test's own, so the test may stop it."""
    cluster = LocalKafkaCluster(brokers=1, data_dir=tmp_path / "kafka")
    cluster.start()
    yield cluster
    cluster.stop()


async def test_an_event_committed_while_the_broker_is_down_is_published_once_when_it_is_back(
    own_kafka: LocalKafkaCluster, tmp_path: Path
) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=own_kafka.bootstrap_servers)
    topic = await fresh_topic(settings, "test.outbox", partitions=1)
    db = await open_database(f"sqlite:///{tmp_path / 'kit.db'}")
    async with relaying(db, settings, "relay-test", OutboxSettings(poll_interval_s=0.2)) as [relay]:
        before = Envelope(type="t.before", source="/kit", subject="k", data={"n": 0})
        async with db.uow(on_commit=relay.wake) as uow:
            uow.emit(topic, before)
            await uow.commit()
        await read_topic(settings.kafka_bootstrap_servers, topic, until=lambda found: len(found) == 1)

        own_kafka.stop_node(0)
        events = [Envelope(type="t.during", source="/kit", subject="k", data={"n": n}) for n in (1, 2, 3)]
        async with db.uow(on_commit=relay.wake) as uow:
            for event in events:
                uow.emit(topic, event)
            await uow.commit()
        await asyncio.sleep(3)
        assert await relay.backlog() == 3  # kept, not dropped, while nothing can be sent
        # The relay is waiting for the broker now, holding no write lock: a write that would not wait for
        # one (timeout 0) goes through, so handlers and the API keep working while Kafka is away.
        other = sqlite3.connect(tmp_path / "kit.db", timeout=0)
        try:
            other.execute("INSERT INTO effects (subject, ce_id) VALUES ('written-meanwhile', 'x')")
            other.commit()
        finally:
            other.close()

        own_kafka.start_node(0)
        records = await read_topic(
            settings.kafka_bootstrap_servers,
            topic,
            until=lambda found: len(found) >= 4,
            timeout_s=90,
            settle_s=3,
        )
        read = [from_record(r.key, r.value, r.headers) for r in records]
        assert [e.id for e in read] == [before.id] + [e.id for e in events]  # once each, in order
        assert await relay.backlog() == 0


async def test_the_relays_of_two_replicas_on_one_database_publish_each_event_once_in_order(
    kafka_topics: KafkaSettings, db_url: str
) -> None:
    topic = await fresh_topic(kafka_topics, "test.outbox-pair", partitions=1)
    db = await open_database(db_url)
    outbox = OutboxSettings(poll_interval_s=0.05)
    async with relaying(db, kafka_topics, "relay-pair", outbox, replicas=2) as relays:
        events = [Envelope(type="t.pair", source="/kit", subject="k", data={"n": n}) for n in range(60)]
        for chunk in range(0, len(events), 5):
            async with db.uow(on_commit=relays[chunk % 2].wake) as uow:
                for event in events[chunk : chunk + 5]:
                    uow.emit(topic, event)
                await uow.commit()
            await asyncio.sleep(0.02)
        records = await read_topic(
            kafka_topics.kafka_bootstrap_servers, topic, until=lambda found: len(found) >= 60, settle_s=2
        )
        assert [from_record(r.key, r.value, r.headers).id for r in records] == [e.id for e in events]
        assert await relays[0].backlog() == 0


async def test_an_event_the_broker_refuses_for_good_is_parked_and_only_its_key_waits(
    kafka_topics: KafkaSettings, db_url: str
) -> None:
    """An oversized event (a vacancy carrying 800 KB of extra text, say) is parked with its reason; the events
    of its key wait behind it, every other key flows on; dropping it lets its key go on, in order."""
    from techport_shared.outbox import drop_parked, parked_events

    topic = await fresh_topic(kafka_topics, "test.outbox-parked", partitions=1)
    db = await open_database(db_url)
    outbox = OutboxSettings(poll_interval_s=0.05, max_record_bytes=200_000)
    async with relaying(db, kafka_topics, "relay-parked", outbox) as [relay]:
        huge = Envelope(type="t.huge", source="/kit", subject="wedged", data={"extra": "é" * 400_000})
        after_same_key = Envelope(type="t.after", source="/kit", subject="wedged", data={"n": 1})
        others = [Envelope(type="t.other", source="/kit", subject=f"k{n}", data={"n": n}) for n in range(5)]
        async with db.uow(on_commit=relay.wake) as uow:
            for event in (huge, after_same_key, *others):
                uow.emit(topic, event)
            await uow.commit()
        records = await read_topic(
            kafka_topics.kafka_bootstrap_servers, topic, until=lambda found: len(found) >= 5, settle_s=1.5
        )
        assert sorted(from_record(r.key, r.value, r.headers).id for r in records) == sorted(
            e.id for e in others
        )
        [parked] = await parked_events(db.sessions, db.tables)
        assert parked.key == "wedged" and parked.size > 800_000 and "at most 200000" in parked.reason
        assert await relay.backlog() == 1  # the one behind it waits, kept
        # A restart changes nothing: the parked event stays parked, the others stay published once.
        assert await relay.publish_pending() == 0
        assert await drop_parked(db.sessions, db.tables, [parked.id]) == 1
        relay.wake()
        records = await read_topic(
            kafka_topics.kafka_bootstrap_servers, topic, until=lambda found: len(found) >= 6, settle_s=1.0
        )
        assert [from_record(r.key, r.value, r.headers).id for r in records][-1] == after_same_key.id
        assert await relay.backlog() == 0
