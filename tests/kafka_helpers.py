"""Reading and writing raw records on the real broker, for assertions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from techport_shared.envelope import KafkaRecord
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings
from techport_shared.topics import TopicSpec


async def produce(bootstrap: str, topic: str, *records: KafkaRecord) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topic, record.value, key=record.key, headers=record.header_list())
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[ConsumerRecord]], bool],
    where: Callable[[ConsumerRecord], bool] = lambda _: True,
    timeout_s: float = 30.0,
    settle_s: float = 0.0,
) -> list[ConsumerRecord]:
    """Records of `topic` (from the beginning) that satisfy `where`, once `until` holds for them.

    With `settle_s`, keep reading that long after `until` first holds, to see records that should NOT come.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"assert-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[ConsumerRecord] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    settle_deadline: float | None = None
    try:
        while True:
            now = loop.time()
            if settle_deadline is not None and now >= settle_deadline:
                return found
            if now >= deadline:
                if settle_deadline is None:
                    raise TimeoutError(f"{topic}: condition not met; saw {len(found)} matching records")
                return found
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend(r for r in records if where(r))
            if settle_deadline is None and until(found):
                if settle_s <= 0:
                    return found
                settle_deadline = loop.time() + settle_s
    finally:
        await consumer.stop()


def header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode()
    return None


async def fresh_topic(settings: KafkaSettings, prefix: str, partitions: int = 3) -> str:
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    settings = settings.model_copy(update={"topic_partitions": {name: partitions}})
    await ensure_topics(settings, (TopicSpec(name, "test", "id", ()),))
    return name
