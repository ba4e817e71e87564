"""A service's publisher keeps publishing after the broker was away for longer than a publish may wait.

aiokafka's idempotent producer fails a batch that waited past its timeout for a partition without a leader
(what a restarted broker reports for a moment) after it took that batch's sequence number: the broker never
sees that number, rejects every later batch as out of order, and the producer stays broken until the process
restarts (aio-libs/aiokafka#1017). The fault test that stops the broker for 20 s found it in CI: matching's
outbox stopped publishing for good.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from techport_dev.kafka import LocalKafkaCluster
from techport_shared.envelope import KafkaRecord
from techport_shared.kafka import BrokerPublisher, create_broker, ensure_topics
from techport_shared.settings import KafkaSettings
from techport_shared.topics import TopicSpec

from tests.kafka_helpers import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

PUBLISHERS = 6  # as many services; each publishes the way the outbox relay does


async def test_every_publisher_resumes_after_the_broker_was_away_longer_than_the_request_timeout(
    tmp_path: Path,
) -> None:
    cluster = LocalKafkaCluster(brokers=1, data_dir=tmp_path / "kafka")
    bootstrap = await asyncio.to_thread(cluster.start)
    try:
        settings = KafkaSettings(kafka_bootstrap_servers=bootstrap, kafka_request_timeout_ms=2_000)
        topic = TopicSpec("test.restart", "test", "id", ())
        await ensure_topics(settings, (topic,))
        brokers = [create_broker(settings, client_id=f"restart-test-{n}") for n in range(PUBLISHERS)]
        for broker in brokers:
            await broker.start()
        published: list[list[bytes]] = [[] for _ in brokers]
        stop = asyncio.Event()

        async def publish_until_stopped(n: int, publisher: BrokerPublisher) -> None:
            """One record at a time, each retried until the broker takes it (the outbox relay's way)."""
            count = 0
            while not stop.is_set():
                value = f"p{n}-{count}".encode()
                try:
                    await publisher.send(topic.name, KafkaRecord(f"key-{n}-{count % 7}".encode(), value, {}))
                except Exception:
                    await asyncio.sleep(0.2)
                    continue
                published[n].append(value)
                count += 1
                await asyncio.sleep(0.02)

        tasks = [
            asyncio.create_task(publish_until_stopped(n, BrokerPublisher(b))) for n, b in enumerate(brokers)
        ]
        try:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.stop_node, 0)
            await asyncio.sleep(8.0)  # four times the request timeout
            await asyncio.to_thread(cluster.start_node, 0)
            before = [len(p) for p in published]
            deadline = asyncio.get_running_loop().time() + 60
            while any(len(p) < b + 20 for p, b in zip(published, before, strict=True)):
                stuck = [n for n, (p, b) in enumerate(zip(published, before, strict=True)) if len(p) < b + 20]
                assert asyncio.get_running_loop().time() < deadline, f"publishers {stuck} stopped publishing"
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            for broker in brokers:
                await broker.stop()
        expected = sum(len(p) for p in published)
        records = await read_topic(bootstrap, topic.name, until=lambda found: len(found) >= expected)
        for n, values in enumerate(published):
            mine = [r.value for r in records if r.value.startswith(f"p{n}-".encode())]
            # Every acknowledged record is there, in order per key (a retried one may come twice).
            for key in range(7):
                sent = [v for i, v in enumerate(values) if i % 7 == key]
                seen = [v for v in dict.fromkeys(mine) if int(v.split(b"-")[1]) % 7 == key]
                assert [v for v in seen if v in set(sent)] == sent
    finally:
        await asyncio.to_thread(cluster.stop, False)
