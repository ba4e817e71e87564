"""The outbox relay: publishes committed outbox events in order, after commit, retrying until the broker
takes them, so nothing written is lost.

Order: events are published in outbox id order, one at a time, and a failure stops the pass (nothing later
is sent before it), so events of one key keep their order. With several replicas of a service, one relay
publishes at a time: on PostgreSQL the one holding the relay's advisory lock, on SQLite the one holding the
write lock. A crash between the broker's ack and marking the row sends that event again; consumers drop the
repeat by (ce_source, ce_id).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from datetime import UTC, datetime

from sqlalchemy import func, select, text, update

from techport_shared.db import SessionFactory
from techport_shared.envelope import KafkaRecord
from techport_shared.kafka import RecordPublisher
from techport_shared.logging import get_logger
from techport_shared.messaging import MessagingTables
from techport_shared.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PUBLISH_FAILURES,
    OUTBOX_PUBLISHED,
)
from techport_shared.settings import OutboxSettings

log = get_logger(__name__)
_OBSERVE_EVERY_S = 5.0


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
                log.warning("outbox publish failed; retrying", error=repr(exc), retry_in_s=delay)
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
        """One pass: publish what is unpublished, oldest first. Returns how many were published."""
        published = 0
        while True:
            count = await self._publish_batch()
            published += count
            if count < self._settings.batch_size:
                break
        return published

    async def _publish_batch(self) -> int:
        table = self._table
        async with self._sessions() as session:
            dialect = session.get_bind().dialect.name
            if dialect == "postgresql":
                locked = await session.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": self._lock_key}
                )
                if not locked:
                    return 0
            elif dialect == "sqlite":
                # Two processes on one SQLite file (replicas in development) would publish the same rows:
                # a write first takes the file's write lock, so the other relay waits, then sees them sent.
                await session.execute(update(table).where(table.c.id == -1).values(attempts=table.c.attempts))
            rows = (
                await session.execute(
                    select(table.c.id, table.c.topic, table.c.message_key, table.c.headers, table.c.value)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.id)
                    .limit(self._settings.batch_size)
                )
            ).all()
            published = 0
            failure: Exception | None = None
            for row in rows:
                record = KafkaRecord(
                    key=row.message_key.encode() if row.message_key is not None else None,
                    value=row.value,
                    headers={k: v.encode() for k, v in row.headers.items()},
                )
                try:
                    await self._publisher.send(row.topic, record)
                except Exception as exc:
                    failure = exc
                    await session.execute(
                        update(table)
                        .where(table.c.id == row.id)
                        .values(attempts=table.c.attempts + 1, last_error=repr(exc)[:2000])
                    )
                    # Stop here, so nothing after this event overtakes it.
                    break
                await session.execute(
                    update(table)
                    .where(table.c.id == row.id)
                    .values(published_at=datetime.now(UTC), attempts=table.c.attempts + 1, last_error=None)
                )
                OUTBOX_PUBLISHED.labels(self.service, row.topic).inc()
                published += 1
            await session.commit()
        if failure is not None:
            raise failure
        return published

    async def _observe_backlog(self) -> None:
        table = self._table
        async with self._sessions() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(table.c.created_at)).where(table.c.published_at.is_(None))
                )
            ).one()
        OUTBOX_BACKLOG.labels(self.service).set(count)
        if oldest is None:
            OUTBOX_OLDEST_AGE.labels(self.service).set(0)
        else:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            OUTBOX_OLDEST_AGE.labels(self.service).set((datetime.now(UTC) - oldest).total_seconds())

    async def backlog(self) -> int:
        async with self._sessions() as session:
            return int(
                await session.scalar(select(func.count()).where(self._table.c.published_at.is_(None))) or 0
            )
