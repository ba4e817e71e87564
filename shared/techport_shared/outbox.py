"""The outbox relay: publishes committed outbox events after commit, in order per key, retrying while the
broker is away, so nothing written is lost, and never wedged by one event.

- Order: events of one (topic, key) are published one after another in outbox id order, and a failure stops
  that key for the pass (nothing later of the key overtakes it). Different keys go concurrently, many records
  in flight, so aiokafka batches them.
- An outage (broker away, timeouts) is waited out: the events stay and the next pass sends them again.
- An event the broker refuses for good (larger than a record may be, an invalid topic) is parked with its
  reason: later events of its key wait behind it, every other key flows on. `techport outbox list|retry|drop`
  shows, retries or drops parked events; `techport_outbox_parked` and an alert rule make them seen.
- A published event's row is deleted in the same short transaction that records the pass (the outbox is a
  queue, not a log: it holds no personal data longer than it must).
- With several replicas, one relay publishes at a time: on PostgreSQL the one holding the relay's advisory
  lock, on SQLite the one holding a lock file beside the database. No database write lock is held while the
  broker is waited for. A crash between the broker's ack and the delete sends that event again; consumers
  drop the repeat by (ce_source, ce_id).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from techport_shared.db import SessionFactory, sqlite_file_lock
from techport_shared.envelope import KafkaRecord
from techport_shared.kafka import PermanentlyRefused, RecordPublisher
from techport_shared.limits import MAX_ERROR_CHARS, trim
from techport_shared.logging import get_logger, scrub
from techport_shared.messaging import MessagingTables
from techport_shared.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PARKED,
    OUTBOX_PUBLISH_FAILURES,
    OUTBOX_PUBLISHED,
)
from techport_shared.settings import OutboxSettings

log = get_logger(__name__)
_OBSERVE_EVERY_S = 5.0


@dataclass
class _Pass:
    """What one pass did: rows published, rows parked (with why), rows that failed for now."""

    published: list[tuple[int, str]]
    parked: list[tuple[int, str]]
    failed: list[tuple[int, Exception]]


class OutboxRelay:
    def __init__(
        self,
        service: str,
        sessions: SessionFactory,
        tables: MessagingTables,
        publisher: RecordPublisher,
        settings: OutboxSettings | None = None,
    ) -> None:
        self.service = service
        self._sessions = sessions
        self._table = tables.outbox
        self._publisher = publisher
        self._settings = settings or OutboxSettings()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._lock_key = zlib.crc32(f"techport-outbox-{service}".encode())

    def wake(self) -> None:
        """Called after a commit that wrote events: publish now rather than at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        self._stopping = False  # a service may be started again after a stop (tests, a restarted lifespan)
        delay = self._settings.poll_interval_s
        observed_at = 0.0
        while not self._stopping:
            try:
                await self.publish_pending()
                delay = self._settings.poll_interval_s
                failed = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                OUTBOX_PUBLISH_FAILURES.labels(self.service).inc()
                log.warning("outbox publish failed; retrying", error=scrub(repr(exc)), retry_in_s=delay)
                failed = True
            # The backlog matters most while publishing fails; a few seconds' freshness is enough for alerts.
            if time.monotonic() - observed_at >= _OBSERVE_EVERY_S:
                with contextlib.suppress(Exception):
                    await self._observe_backlog()
                observed_at = time.monotonic()
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.backoff_max_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
            self._wakeup.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def publish_pending(self) -> int:
        """Passes until nothing is left that can go now. Returns how many were published; raises the first
        transient failure (after recording what did go) so the caller backs off."""
        published = 0
        while True:
            done, more = await self._publish_batch()
            published += done
            if not more:
                return published

    async def _publish_batch(self) -> tuple[int, bool]:
        table = self._table
        async with self._sessions() as session, self._sole_publisher(session) as sole:
            if not sole:
                return 0, False  # another replica's relay is publishing
            parked = table.alias("parked")
            behind_parked = (
                select(parked.c.id)
                .where(
                    parked.c.parked_at.is_not(None),
                    parked.c.topic == table.c.topic,
                    parked.c.message_key == table.c.message_key,
                    parked.c.id < table.c.id,
                )
                .exists()
            )
            # Events of a key with a parked event wait behind it; every other key goes on.
            ready = (
                await session.execute(
                    select(table.c.id, table.c.topic, table.c.message_key, table.c.headers, table.c.value)
                    .where(table.c.published_at.is_(None), table.c.parked_at.is_(None), ~behind_parked)
                    .order_by(table.c.id)
                    .limit(self._settings.batch_size)
                )
            ).all()
            outcome = await self._send(ready)
            # Recorded after the sends: on SQLite the first write takes the database's write lock.
            await self._record(session, outcome)
            await session.commit()
        for _row_id, topic in outcome.published:
            OUTBOX_PUBLISHED.labels(self.service, topic).inc()
        if outcome.parked:
            await self._observe_backlog()
        if outcome.failed:
            raise outcome.failed[0][1]
        full = len(ready) == self._settings.batch_size
        return len(outcome.published), bool(outcome.parked) or (full and bool(outcome.published))

    async def _send(self, rows: Sequence[Any]) -> _Pass:
        """Each key's rows in order, one after another; the keys concurrently."""
        by_key: dict[tuple[str, str | None], list[Any]] = {}
        for row in rows:
            by_key.setdefault((row.topic, row.message_key), []).append(row)
        outcome = _Pass([], [], [])
        limit = self._settings.max_record_bytes

        async def send_key(key_rows: list[Any]) -> None:
            for row in key_rows:
                record = KafkaRecord(
                    key=row.message_key.encode() if row.message_key is not None else None,
                    value=row.value,
                    headers={k: v.encode() for k, v in row.headers.items()},
                )
                size = len(record.value) + sum(len(k) + len(v) for k, v in record.headers.items())
                try:
                    if size > limit:
                        raise PermanentlyRefused(
                            f"the record is {size} bytes; the broker takes at most {limit}"
                        )
                    await self._publisher.send(row.topic, record)
                except PermanentlyRefused as refused:
                    outcome.parked.append((row.id, refused.reason))
                    return  # the rest of this key waits behind the parked one
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    outcome.failed.append((row.id, exc))
                    return  # stop this key here, so nothing after this event overtakes it
                outcome.published.append((row.id, row.topic))

        await asyncio.gather(*(send_key(key_rows) for key_rows in by_key.values()))
        return outcome

    async def _record(self, session: AsyncSession, outcome: _Pass) -> None:
        table = self._table
        if outcome.published:
            await session.execute(
                delete(table).where(table.c.id.in_([row_id for row_id, _ in outcome.published]))
            )
        now = datetime.now(UTC)
        for row_id, reason in outcome.parked:
            log.error("outbox event parked: the broker refuses it for good", outbox_id=row_id, reason=reason)
            await session.execute(
                update(table)
                .where(table.c.id == row_id)
                .values(
                    parked_at=now, last_error=trim(reason, MAX_ERROR_CHARS), attempts=table.c.attempts + 1
                )
            )
        for row_id, exc in outcome.failed:
            await session.execute(
                update(table)
                .where(table.c.id == row_id)
                .values(attempts=table.c.attempts + 1, last_error=trim(scrub(repr(exc)), MAX_ERROR_CHARS))
            )

    @contextlib.asynccontextmanager
    async def _sole_publisher(self, session: AsyncSession) -> AsyncIterator[bool]:
        """Whether this relay is the one replica publishing, for as long as the context lasts."""
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            # Held until the transaction ends, which is after the rows are recorded.
            yield bool(
                await session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": self._lock_key})
            )
            return
        async with sqlite_file_lock(
            bind.engine.url.render_as_string(hide_password=False), "outbox", wait=False
        ) as held:
            yield held

    async def _observe_backlog(self) -> None:
        table = self._table
        waiting = table.c.published_at.is_(None) & table.c.parked_at.is_(None)
        async with self._sessions() as session:
            count, oldest = (
                await session.execute(select(func.count(), func.min(table.c.created_at)).where(waiting))
            ).one()
            parked = await session.scalar(select(func.count()).where(table.c.parked_at.is_not(None)))
        OUTBOX_BACKLOG.labels(self.service).set(count)
        OUTBOX_PARKED.labels(self.service).set(parked or 0)
        if oldest is None:
            OUTBOX_OLDEST_AGE.labels(self.service).set(0)
        else:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            OUTBOX_OLDEST_AGE.labels(self.service).set((datetime.now(UTC) - oldest).total_seconds())

    async def backlog(self) -> int:
        """Events waiting to be published (parked ones not counted)."""
        table = self._table
        async with self._sessions() as session:
            return int(
                await session.scalar(
                    select(func.count()).where(table.c.published_at.is_(None), table.c.parked_at.is_(None))
                )
                or 0
            )


# --- what operators do with parked events (`techport outbox ...`) -------------------------------------------
@dataclass(frozen=True)
class ParkedEvent:
    id: int
    topic: str
    key: str | None
    ce_type: str
    size: int
    reason: str
    parked_at: datetime


async def parked_events(sessions: SessionFactory, tables: MessagingTables) -> list[ParkedEvent]:
    table = tables.outbox
    async with sessions() as session:
        rows = await session.execute(
            select(
                table.c.id,
                table.c.topic,
                table.c.message_key,
                table.c.ce_type,
                func.length(table.c.value),
                table.c.last_error,
                table.c.parked_at,
            )
            .where(table.c.parked_at.is_not(None))
            .order_by(table.c.id)
        )
        return [ParkedEvent(r[0], r[1], r[2], r[3], int(r[4] or 0), r[5] or "", r[6]) for r in rows]


async def retry_parked(sessions: SessionFactory, tables: MessagingTables, ids: list[int] | None) -> int:
    """Put parked events back in line (after the cause was fixed, e.g. the broker's record limit raised)."""
    return await _change_parked(sessions, update(tables.outbox).values(parked_at=None), tables, ids)


async def drop_parked(sessions: SessionFactory, tables: MessagingTables, ids: list[int] | None) -> int:
    """Delete parked events for good: the events of their keys behind them then go on."""
    return await _change_parked(sessions, delete(tables.outbox), tables, ids)


async def _change_parked(
    sessions: SessionFactory, change: Any, tables: MessagingTables, ids: list[int] | None
) -> int:
    """Run an update or delete on the parked events (those of `ids`, or all): how many it changed."""
    table = tables.outbox
    condition: Any = table.c.parked_at.is_not(None)
    if ids is not None:
        condition = condition & table.c.id.in_(ids)
    async with sessions() as session:
        result: Any = await session.execute(change.where(condition))
        await session.commit()
        return int(result.rowcount or 0)
