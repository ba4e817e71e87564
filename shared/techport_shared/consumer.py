"""Consuming with retries and a dead-letter topic, committing each offset only after its record was handled
or dead-lettered (at-least-once), and handing typed events to handlers exactly once per (ce_source, ce_id).

FastStream 0.7 has no DLQ for Kafka and its default ACK_FIRST policy is at-most-once; this module is ours.
- A record that cannot be read (not a CloudEvent, not JSON, wrong shape) is poison: dead-lettered at once.
- A handler that fails is retried with exponential backoff, `CONSUMER_MAX_ATTEMPTS` times in all, then its
  record is dead-lettered and the consumer moves on.
- A failure of the infrastructure (database or broker unreachable) is not the record's fault: it is retried
  with capped backoff until the infrastructure is back, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import FakeConsumer
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from techport_shared.envelope import Envelope, EnvelopeError, KafkaRecord, from_record
from techport_shared.events import field_errors, parse_data
from techport_shared.kafka import RecordPublisher
from techport_shared.logging import get_logger, log_context
from techport_shared.metrics import (
    CONSUMER_LAG,
    CONSUMER_RETRIES,
    DLQ_RECORDS,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
    UNKNOWN_EVENT_TYPES,
)
from techport_shared.settings import ConsumerSettings
from techport_shared.topics import DLQ
from techport_shared.uow import DuplicateMessage, UnitOfWork

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


RecordHandler = Callable[[ConsumedRecord], Awaitable[str]]
EventHandler = Callable[[Envelope, Any, UnitOfWork], Awaitable[None]]


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
        | KafkaTimeoutError,
    )


class DeadLetters:
    """Writes a record to `techport.dlq.v1` unchanged, with the contract's `dlq_*` headers."""

    def __init__(self, service: str, publisher: RecordPublisher, retry_max_s: float = 5.0) -> None:
        self.service = service
        self._publisher = publisher
        self._retry_max_s = retry_max_s

    async def send(self, record: ConsumedRecord, error: str, attempts: int, kind: str) -> None:
        headers = {k: v for k, v in record.headers if not k.startswith("dlq_")}
        headers.update(
            {
                "dlq_topic": record.topic.encode(),
                "dlq_partition": str(record.partition).encode(),
                "dlq_offset": str(record.offset).encode(),
                "dlq_service": self.service.encode(),
                "dlq_error": error[:4000].encode("utf-8", "replace"),
                "dlq_attempts": str(attempts).encode(),
            }
        )
        dead = KafkaRecord(key=record.key, value=record.value or b"", headers=headers)
        delay = 0.2
        # The offset is committed only after this succeeds, so keep trying while the broker is away.
        while True:
            try:
                await self._publisher.send(DLQ.name, dead)
                break
            except Exception as exc:
                log.warning("dead-lettering failed; retrying", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
        DLQ_RECORDS.labels(self.service, record.topic, kind).inc()
        log.error(
            "record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error,
            attempts=attempts,
        )


class ReliableConsumer:
    """Subscribes record handlers to topics with retries, dead-lettering and per-offset commits."""

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

    def subscribe(self, topics: str | tuple[str, ...], group_id: str, handler: RecordHandler) -> Any:
        """One consumer in `group_id` for `topics` (one or several), each record handed to `handler`."""
        names = (topics,) if isinstance(topics, str) else topics
        subscriber = self._broker.subscriber(
            *names,
            group_id=group_id,
            auto_offset_reset=self._settings.auto_offset_reset,
            title=f"{group_id}:{','.join(names)}",
            # Hand the whole message over, undecoded: FastStream would otherwise JSON-decode by content-type
            # and drop a record that is not JSON before our code sees it. A plain object, not the message
            # itself, so that FastAPI's dependency layer (faststream-fastapi) passes it through untouched.
            decoder=_deliver,
        )

        @subscriber
        async def consume(delivery: Any) -> None:
            # `delivery` is what `_deliver` returned: FastStream's message, not a decoded body.
            message = delivery.message
            raw: Any = message.raw_message
            record = ConsumedRecord(
                topic=raw.topic,
                partition=raw.partition,
                offset=raw.offset,
                key=raw.key,
                value=raw.value,
                headers=tuple(raw.headers or ()),
            )
            try:
                await self.process(record, handler)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Should not happen (process handles every failure), but if it does, never skip the record:
                # seek back so it is read again.
                log.error("consumer failed; re-reading the record", error=repr(exc), offset=record.offset)
                await _seek_back(message.consumer, record)
                await asyncio.sleep(self._settings.backoff_max_s)
                return
            if await _commit(message.consumer, record):
                self._committed[(group_id, record.topic, record.partition)] = record.offset + 1

        self._subscribers.append((group_id, subscriber))
        return subscriber

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

    async def process(self, record: ConsumedRecord, handler: RecordHandler) -> str:
        settings = self._settings
        attempts = 0
        delay = settings.backoff_initial_s
        started = time.perf_counter()
        event_type = record.header("ce_type") or "unknown"
        try:
            while True:
                attempts += 1
                try:
                    outcome = await handler(record)
                    EVENTS_CONSUMED.labels(self.service, record.topic, event_type, outcome).inc()
                    return outcome
                except PoisonRecord as exc:
                    await self._dead_letters.send(record, exc.error, attempts, exc.kind)
                    EVENTS_CONSUMED.labels(self.service, record.topic, event_type, "dead_lettered").inc()
                    return "dead_lettered"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_transient(exc):
                        # Not the record's fault: wait for the infrastructure, however long it takes.
                        attempts -= 1
                        log.warning("infrastructure unavailable; retrying", error=repr(exc), retry_in_s=delay)
                    elif attempts >= settings.max_attempts:
                        await self._dead_letters.send(
                            record, f"{type(exc).__name__}: {exc}", attempts, "handler"
                        )
                        EVENTS_CONSUMED.labels(self.service, record.topic, event_type, "dead_lettered").inc()
                        return "dead_lettered"
                    else:
                        log.warning("handler failed; retrying", error=repr(exc), attempt=attempts)
                    CONSUMER_RETRIES.labels(self.service, record.topic).inc()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, settings.backoff_max_s)
        finally:
            HANDLER_SECONDS.labels(self.service, record.topic).observe(time.perf_counter() - started)


class _Delivery:
    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


async def _deliver(message: Any) -> Any:
    return _Delivery(message)


async def _seek_back(consumer: Any, record: ConsumedRecord) -> None:
    if isinstance(consumer, FakeConsumer):
        return
    with contextlib.suppress(Exception):
        consumer.seek(TopicPartition(record.topic, record.partition), record.offset)


async def _commit(consumer: Any, record: ConsumedRecord) -> bool:
    if isinstance(consumer, FakeConsumer):  # FastStream's in-memory test broker has no offsets
        return False
    try:
        await consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
        return True
    except Exception as exc:
        # After a rebalance the partition may belong to another member, which will see this record again;
        # the processed-messages table makes that harmless.
        log.warning("offset commit failed", error=repr(exc), topic=record.topic, offset=record.offset)
        return False


def read_envelope(record: ConsumedRecord) -> Envelope:
    try:
        return from_record(record.key, record.value, record.headers)
    except EnvelopeError as exc:
        raise PoisonRecord(f"{exc.field}: {exc.message}", kind="envelope") from None


class EventDispatcher:
    """A record handler that reads the CloudEvent, validates its data with the contract's model and calls the
    handler of its type inside a unit of work that marks (consumer, ce_source, ce_id) as processed."""

    def __init__(
        self,
        service: str,
        consumer: str,
        unit_of_work: Callable[[], UnitOfWork],
        handlers: dict[str, EventHandler],
        lock: asyncio.Lock | None = None,
    ) -> None:
        self.service = service
        self.consumer = consumer
        self._unit_of_work = unit_of_work
        self._handlers = handlers
        # Handlers that share in-memory state with other consumers of the service take turns.
        self._lock = lock or contextlib.nullcontext()

    async def __call__(self, record: ConsumedRecord) -> str:
        envelope = read_envelope(record)
        handler = self._handlers.get(envelope.type)
        if handler is None:
            UNKNOWN_EVENT_TYPES.labels(self.service, envelope.type).inc()
            return "ignored"
        try:
            data: BaseModel = parse_data(envelope.type, envelope.data)
        except ValidationError as exc:
            raise PoisonRecord(f"data: {json.dumps(field_errors(exc))}", kind="schema") from None
        with log_context(correlation_id=envelope.correlationid or envelope.id, ce_id=envelope.id):
            async with self._lock, self._unit_of_work() as uow:
                if not await uow.claim(self.consumer, envelope.source, envelope.id):
                    return "duplicate"
                await handler(envelope, data, uow)
                try:
                    await uow.commit()
                except DuplicateMessage:
                    return "duplicate"
        return "handled"
