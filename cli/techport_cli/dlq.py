"""`techport dlq list|replay`: what consumers gave up on, and sending it back once the cause is fixed.

Replay puts a dead-lettered record back on the topic it came from, exactly as it was (its `dlq_*` headers
removed, `dlq_replayed_from` added for tracing). Each (service, topic) pair has its own cursor on the DLQ,
a consumer group named `techport-dlq-replay.<service>.<topic>`: a record is replayed once, and a second run
finds nothing new. Consumers deduplicate by (ce_source, ce_id), so a record another consumer of the topic
already handled has no second effect there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import Progress
from techport_shared.kafka import plain_producer
from techport_shared.settings import KafkaSettings
from techport_shared.topics import DLQ

from techport_cli.topics import read_topic

REPLAYED_FROM = "dlq_replayed_from"


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    raw_headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: Any) -> DeadLetter:
        raw = tuple(record.headers or ())
        return cls(
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers={k: v.decode("utf-8", "replace") for k, v in raw},
            raw_headers=raw,
        )

    @property
    def topic(self) -> str:
        return self.headers.get("dlq_topic", "")

    @property
    def service(self) -> str:
        return self.headers.get("dlq_service", "")

    def original_headers(self) -> list[tuple[str, bytes]]:
        kept = [(k, v) for k, v in self.raw_headers if not k.startswith("dlq_")]
        return [*kept, (REPLAYED_FROM, f"{DLQ.name}:{self.partition}:{self.offset}".encode())]


@dataclass(frozen=True)
class ReplayReport:
    replayed: list[DeadLetter]
    dry_run: bool


def cursor_group(service: str, topic: str) -> str:
    return f"techport-dlq-replay.{service}.{topic}"


async def dead_letters(kafka: KafkaSettings, wait_s: float = 0.0) -> list[DeadLetter]:
    return [DeadLetter.of(r) for r in await read_topic(kafka, DLQ.name, wait_s)]


async def replay(kafka: KafkaSettings, service: str, topic: str, dry_run: bool = False) -> ReplayReport:
    """Replay what `service` dead-lettered from `topic` since the last replay of that pair."""
    group = cursor_group(service, topic)
    records = await read_topic(kafka, DLQ.name, group=group)
    chosen = [d for d in map(DeadLetter.of, records) if d.service == service and d.topic == topic]
    if dry_run:
        return ReplayReport(chosen, dry_run=True)
    producer = plain_producer(kafka)
    await producer.start()
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task(f"replaying to {topic}", total=len(chosen))
            for dead in chosen:
                await producer.send_and_wait(topic, dead.value, key=dead.key, headers=dead.original_headers())
                progress.advance(task)
    finally:
        await producer.stop()
    # Move the cursor past everything read, also records of other pairs (they have cursors of their own).
    # A crash before this line replays the same records again, which consumers deduplicate.
    await _commit_read(kafka, group, records)
    return ReplayReport(chosen, dry_run=False)


async def _commit_read(kafka: KafkaSettings, group: str, records: list[Any]) -> None:
    if not records:
        return
    next_offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        next_offsets[tp] = max(next_offsets.get(tp, 0), record.offset + 1)
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(next_offsets))
        await consumer.commit(next_offsets)
    finally:
        await consumer.stop()
