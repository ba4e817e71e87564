"""Consuming with retries and a dead-letter topic, committing offsets only after their records were handled or
dead-lettered (at-least-once), in batches: one transaction per batch, each record deduplicated on its own.

FastStream 0.7 has no DLQ for Kafka and its default ACK_FIRST policy is at-most-once; this module is ours.
- A batch is handled in one transaction. A record that cannot be read (not a CloudEvent, not JSON, too large,
  wrong shape) is poison: dead-lettered alone, at once; the others of its batch are handled.
- When a handler fails, the batch is rolled back and its records are handled one at a time: a failing one is
  retried with exponential backoff, `CONSUMER_MAX_ATTEMPTS` times in all, then dead-lettered, and the
  consumer moves on.
- A failure of the infrastructure (database or broker unreachable) is not the records' fault: it is retried
  with capped backoff until the infrastructure is back, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import FakeConsumer
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from techport_shared.envelope import KafkaRecord
from techport_shared.kafka import PermanentlyRefused, RecordPublisher
from techport_shared.limits import MAX_ERROR_CHARS, MAX_EVENT_BYTES, trim
from techport_shared.logging import get_logger, scrub
from techport_shared.metrics import (
    CONSUMER_BATCH_RECORDS,
    CONSUMER_LAG,
    CONSUMER_RETRIES,
    DLQ_RECORDS,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
    topic_label,
    type_label,
)
from techport_shared.settings import ConsumerSettings
from techport_shared.topics import DLQ

log = get_logger(__name__)


@dataclass(frozen=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None


class PoisonRecord(Exception):
    """The record itself is bad: retrying cannot help. `error` goes into the DLQ's `dlq_error` header."""

    def __init__(self, error: str, kind: str = "poison") -> None:
        super().__init__(error)
        self.error = error
        self.kind = kind


class RecordHandler(Protocol):
    """What a consumer hands records to (messagebus.EventDispatcher is one)."""

    async def __call__(self, record: ConsumedRecord) -> str: ...

    async def batch(self, records: list[ConsumedRecord]) -> Sequence[Any]: ...


def is_transient(exc: BaseException) -> bool:
    """Failures of the infrastructure rather than of the record."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        OperationalError
        | InterfaceError
        | PoolTimeoutError
        | ConnectionError
        | TimeoutError
        | KafkaConnectionError
        | KafkaTimeoutError
        | httpx.TransportError,  # another service (members, for a student's key) unreachable
    )


# Headers of the original record a dead letter keeps: the CloudEvents attributes and the content type.
_KEPT_HEADERS = ("ce_", "content-type")
_MAX_DEAD_HEADER_BYTES = 8 * 1024


class DeadLetters:
    """Writes a record to `techport.dlq.v1` with the contract's `dlq_*` headers, bounded by construction: the
    original value as it was when it fits (a record we could read from Kafka may still be too large once the
    headers are added), else cut with `dlq_truncated` saying how large it was; the error text trimmed."""

    def __init__(
        self,
        service: str,
        publisher: RecordPublisher,
        retry_max_s: float = 5.0,
        seal: Callable[[ConsumedRecord], Awaitable[bytes | None]] | None = None,
    ) -> None:
        self.service = service
        self._publisher = publisher
        self._retry_max_s = retry_max_s
        # How a record's value is kept when it carries personal data in the clear (members' partner
        # ingress): sealed with the key of the student it is about, so an erasure reaches the dead letter.
        self._seal = seal

    def seal_with(self, seal: Callable[[ConsumedRecord], Awaitable[bytes | None]]) -> None:
        self._seal = seal

    async def dead_record(self, record: ConsumedRecord, error: str, attempts: int) -> KafkaRecord:
        headers: dict[str, bytes] = {}
        size = 0
        for key, value in record.headers:
            if key.startswith(_KEPT_HEADERS) and size + len(key) + len(value) <= _MAX_DEAD_HEADER_BYTES:
                headers[key] = value
                size += len(key) + len(value)
        value = record.value or b""
        if self._seal is not None:
            sealed = await self._seal(record)
            if sealed is not None:
                value, headers["dlq_sealed"] = sealed, b"1"
        if len(value) > MAX_EVENT_BYTES:
            headers["dlq_truncated"] = str(len(value)).encode()
            value = value[:MAX_EVENT_BYTES]
        headers.update(
            {
                "dlq_topic": record.topic.encode(),
                "dlq_partition": str(record.partition).encode(),
                "dlq_offset": str(record.offset).encode(),
                "dlq_service": self.service.encode(),
                "dlq_error": trim(scrub(error), MAX_ERROR_CHARS).encode("utf-8", "replace"),
                "dlq_attempts": str(attempts).encode(),
            }
        )
        return KafkaRecord(key=(record.key or b"")[:1024] or None, value=value, headers=headers)

    async def send(self, record: ConsumedRecord, error: str, attempts: int, kind: str) -> None:
        dead = await self.dead_record(record, error, attempts)
        delay = 0.2
        # The offset is committed only after this succeeds, so keep trying while the broker is away; a record
        # the broker refuses for good is sent again without its value, so it can never hold the consumer up.
        while True:
            try:
                await self._publisher.send(DLQ.name, dead)
                break
            except PermanentlyRefused as refused:
                log.error(
                    "dead letter refused by the broker; sending it without its value", error=str(refused)
                )
                dead = KafkaRecord(
                    key=None,
                    value=b"",
                    headers={k: v for k, v in dead.headers.items() if k.startswith("dlq_")}
                    | {"dlq_truncated": str(len(record.value or b"")).encode()},
                )
            except Exception as exc:
                log.warning("dead-lettering failed; retrying", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
        DLQ_RECORDS.labels(self.service, topic_label(record.topic), kind).inc()
        log.error(
            "record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=trim(scrub(error), MAX_ERROR_CHARS),
            attempts=attempts,
        )


class ReliableConsumer:
    """Subscribes record handlers to topics with batches, retries, dead-lettering and offset commits."""

    def __init__(
        self,
        service: str,
        broker: KafkaBroker,
        dead_letters: DeadLetters,
        settings: ConsumerSettings | None = None,
    ) -> None:
        self.service = service
        self._broker = broker
        self._dead_letters = dead_letters
        self._settings = settings or ConsumerSettings()
        self._subscribers: list[tuple[str, Any]] = []
        # Offsets we committed, by (group, topic, partition): what the lag is measured from.
        self._committed: dict[tuple[str, str, int], int] = {}
        # Called after offsets were committed (members deletes the partner records it has handled).
        self.on_committed: list[Callable[[dict[TopicPartition, int]], None]] = []

    def subscribe(
        self,
        topics: str | tuple[str, ...],
        group_id: str,
        handler: RecordHandler,
        pattern: str | None = None,
    ) -> Any:
        """One consumer in `group_id` for `topics` (or every topic matching `pattern`), records handed to
        `handler` in batches of at most CONSUMER_BATCH_SIZE."""
        names = () if pattern else ((topics,) if isinstance(topics, str) else topics)
        settings = self._settings
        subscriber = self._broker.subscriber(
            *names,
            pattern=pattern,
            group_id=group_id,
            auto_offset_reset=settings.auto_offset_reset,
            batch=True,
            max_records=settings.batch_size,
            batch_timeout_ms=settings.batch_wait_ms,
            fetch_min_bytes=settings.fetch_min_bytes,
            fetch_max_wait_ms=settings.pattern_fetch_max_wait_ms if pattern else settings.fetch_max_wait_ms,
            title=f"{group_id}:{pattern or ','.join(names)}",
            # Hand the whole batch over, undecoded: FastStream would otherwise JSON-decode by content-type
            # and drop a record that is not JSON before our code sees it. A plain object, not the message
            # itself, so that FastAPI's dependency layer (faststream-fastapi) passes it through untouched.
            decoder=_deliver,
        )

        @subscriber
        async def consume(delivery: Any) -> None:
            # `delivery` is what `_deliver` returned: FastStream's message, not a decoded body.
            message = delivery.message
            records = [
                ConsumedRecord(
                    raw.topic, raw.partition, raw.offset, raw.key, raw.value, tuple(raw.headers or ())
                )
                for raw in message.raw_message
            ]
            if not records:
                return
            try:
                await self.process_batch(records, handler)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Should not happen (process_batch handles every failure), but if it does, never skip the
                # records: seek back so they are read again.
                log.error("consumer failed; re-reading the batch", error=repr(exc))
                await _seek_back(message.consumer, records)
                await asyncio.sleep(settings.backoff_max_s)
                return
            offsets = _next_offsets(records)
            if await _commit(message.consumer, offsets):
                for tp, offset in offsets.items():
                    self._committed[(group_id, tp.topic, tp.partition)] = offset
                for notify in self.on_committed:
                    notify(offsets)

        self._subscribers.append((group_id, subscriber))
        return subscriber

    async def process_batch(self, records: list[ConsumedRecord], handler: RecordHandler) -> None:
        """Handle the batch in one transaction; on a handler's failure, one record at a time."""
        started = time.perf_counter()
        delay = self._settings.backoff_initial_s
        while True:
            try:
                outcomes = list(await handler.batch(records))
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    if len(records) > 1:
                        log.info("batch failed; handling its records one by one", error=scrub(repr(exc)))
                    for record in records:
                        await self.process(record, handler)
                    return
                log.warning("infrastructure unavailable; retrying", error=scrub(repr(exc)), retry_in_s=delay)
                CONSUMER_RETRIES.labels(self.service, topic_label(records[0].topic)).inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.backoff_max_s)
        for record, outcome in zip(records, outcomes, strict=True):
            poison = getattr(outcome, "poison", None)
            name = getattr(outcome, "name", str(outcome))
            if poison is not None:
                await self._dead_letters.send(record, poison.error, 1, poison.kind)
                name = "dead_lettered"
            self._count(record, name)
        topic = topic_label(records[0].topic)
        HANDLER_SECONDS.labels(self.service, topic).observe(time.perf_counter() - started)
        CONSUMER_BATCH_RECORDS.labels(self.service, topic).observe(len(records))

    async def process(self, record: ConsumedRecord, handler: RecordHandler) -> str:
        """One record in a transaction of its own, retried with backoff, dead-lettered if it keeps failing."""
        settings = self._settings
        attempts = 0
        delay = settings.backoff_initial_s
        started = time.perf_counter()
        try:
            while True:
                attempts += 1
                try:
                    outcome = await handler(record)
                except PoisonRecord as exc:
                    await self._dead_letters.send(record, exc.error, attempts, exc.kind)
                    outcome = "dead_lettered"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_transient(exc):
                        # Not the record's fault: wait for the infrastructure, however long it takes.
                        attempts -= 1
                        log.warning(
                            "infrastructure unavailable; retrying", error=scrub(repr(exc)), retry_in_s=delay
                        )
                    elif attempts >= settings.max_attempts:
                        await self._dead_letters.send(
                            record, f"{type(exc).__name__}: {exc}", attempts, "handler"
                        )
                        self._count(record, "dead_lettered")
                        return "dead_lettered"
                    else:
                        log.warning("handler failed; retrying", error=scrub(repr(exc)), attempt=attempts)
                    CONSUMER_RETRIES.labels(self.service, topic_label(record.topic)).inc()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, settings.backoff_max_s)
                    continue
                self._count(record, outcome)
                return outcome
        finally:
            HANDLER_SECONDS.labels(self.service, topic_label(record.topic)).observe(
                time.perf_counter() - started
            )

    def _count(self, record: ConsumedRecord, outcome: str) -> None:
        event_type = type_label(record.header("ce_type"))
        EVENTS_CONSUMED.labels(self.service, topic_label(record.topic), event_type, outcome).inc()

    def refresh_metadata(self) -> None:
        """Ask the brokers for metadata now: a subscription by pattern then takes a new topic at once
        (aiokafka has no public call for it; its client's is used, and a failure only means waiting for the
        next regular refresh)."""
        for _group, subscriber in self._subscribers:
            client = getattr(getattr(subscriber, "consumer", None), "_client", None)
            if client is not None and getattr(subscriber, "pattern", None):
                with contextlib.suppress(Exception):
                    client.force_metadata_update()

    # --- the fetchers ---------------------------------------------------------------------------------------
    def revive_fetchers(self) -> int:
        """Start again any consumer's fetch or group-coordination task that died; how many were.

        aiokafka runs each as one background task. When the subscription changes while they wait (a pattern
        subscription taking a newly registered partner's topic right after another, or a broker lost), they
        can fail an internal assertion and end (aio-libs/aiokafka#796, open). Nothing is fetched, or the group
        is never rejoined, from then on: the consumer would sit idle for good. A restarted routine starts from
        the subscription and assignment it finds, and fetches from the positions consumed so far; aiokafka
        has no public call for it."""
        revived = 0
        for group, subscriber in self._subscribers:
            consumer = getattr(subscriber, "consumer", None)
            for part, task_name, routine in (
                ("_fetcher", "_fetch_task", "_fetch_requests_routine"),
                ("_coordinator", "_coordination_task", "_coordination_routine"),
            ):
                owner = getattr(consumer, part, None)
                task = getattr(owner, task_name, None)
                if task is None or not task.done() or getattr(consumer, "_closed", True):
                    continue
                error = None if task.cancelled() else task.exception()
                log.error(
                    "consumer task stopped; starting it again", group=group, task=task_name, error=repr(error)
                )
                setattr(owner, task_name, asyncio.create_task(getattr(owner, routine)()))
                revived += 1
        return revived

    async def watch_fetchers(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.revive_fetchers()

    # --- lag ------------------------------------------------------------------------------------------------
    async def record_lag(self) -> None:
        """Set `techport_consumer_lag` for every assigned partition: the log end offset minus the offset this
        group committed (asked of the broker once, then tracked as we commit)."""
        for group, subscriber in self._subscribers:
            consumer: Any = getattr(subscriber, "consumer", None)
            if consumer is None or isinstance(consumer, FakeConsumer) or not consumer.assignment():
                continue
            partitions = list(consumer.assignment())
            owned = {(group, tp.topic, tp.partition) for tp in partitions}
            for key in [k for k in self._committed if k[0] == group and k not in owned]:
                # Revoked in a rebalance: another member commits it now, and reports its lag.
                del self._committed[key]
                with contextlib.suppress(KeyError):
                    CONSUMER_LAG.remove(self.service, *key[:2], str(key[2]))
            try:
                # Asked of the broker: the fetcher's high-water mark is stale while a handler is busy.
                ends = await consumer.end_offsets(partitions)
                for tp in partitions:
                    key = (group, tp.topic, tp.partition)
                    if key not in self._committed:
                        committed = await consumer.committed(tp)
                        if committed is None:  # nothing committed yet: we start at the reset position
                            starts = await (
                                consumer.beginning_offsets([tp])
                                if self._settings.auto_offset_reset == "earliest"
                                else consumer.end_offsets([tp])
                            )
                            committed = starts[tp]
                        self._committed[key] = committed
                    lag = max(0, ends[tp] - self._committed[key])
                    CONSUMER_LAG.labels(self.service, group, tp.topic, str(tp.partition)).set(lag)
            except Exception as exc:  # the broker may be away; the next sample will tell
                log.debug("consumer lag not measured", error=repr(exc))

    async def report_lag(self, interval_s: float = 5.0) -> None:
        while True:
            await self.record_lag()
            await asyncio.sleep(interval_s)


class _Delivery:
    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


async def _deliver(message: Any) -> Any:
    return _Delivery(message)


def _next_offsets(records: list[ConsumedRecord]) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


async def _seek_back(consumer: Any, records: list[ConsumedRecord]) -> None:
    if isinstance(consumer, FakeConsumer):
        return
    firsts: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        firsts[tp] = min(firsts.get(tp, record.offset), record.offset)
    for tp, offset in firsts.items():
        with contextlib.suppress(Exception):
            consumer.seek(tp, offset)


async def _commit(consumer: Any, offsets: dict[TopicPartition, int]) -> bool:
    if isinstance(consumer, FakeConsumer):  # FastStream's in-memory test broker has no offsets
        return False
    try:
        await consumer.commit(offsets)
        return True
    except Exception as exc:
        # After a rebalance the partition may belong to another member, which will see these records again;
        # the processed-messages table makes that harmless.
        log.warning("offset commit failed", error=repr(exc))
        return False
