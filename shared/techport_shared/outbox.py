"""The outbox relay: publishes committed outbox events in order, after commit, retrying until the broker
takes them, so nothing written is lost.

Order: events are published in outbox id order, one at a time, and a failure stops the pass (nothing later
is sent before it), so events of one key keep their order. With several replicas of a service, one relay
publishes at a time: on PostgreSQL the one holding the relay's advisory lock, on SQLite the one holding a
lock file beside the database. No database write lock is held while the broker is waited for, so handlers and
the API go on writing while Kafka is slow or away. A crash between the broker's ack and marking the row sends
that event again; consumers drop the repeat by (ce_source, ce_id).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from techport_shared.db import SessionFactory, sqlite_file_lock
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
        async with self._sessions() as session, self._sole_publisher(session) as sole:
            if not sole:
                return 0  # another replica's relay is publishing
            rows = (
                await session.execute(
                    select(table.c.id, table.c.topic, table.c.message_key, table.c.headers, table.c.value)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.id)
                    .limit(self._settings.batch_size)
                )
            ).all()
            sent: list[tuple[int, str, datetime]] = []
            failure: tuple[int, Exception] | None = None
            for row in rows:
                record = KafkaRecord(
                    key=row.message_key.encode() if row.message_key is not None else None,
                    value=row.value,
                    headers={k: v.encode() for k, v in row.headers.items()},
                )
                try:
                    await self._publisher.send(row.topic, record)
                except Exception as exc:
                    failure = (row.id, exc)
                    break  # stop here, so nothing after this event overtakes it
                sent.append((row.id, row.topic, datetime.now(UTC)))
            # Marked after the sends: on SQLite the first write takes the database's write lock.
            for row_id, _topic, published_at in sent:
                await session.execute(
                    update(table)
                    .where(table.c.id == row_id)
                    .values(published_at=published_at, attempts=table.c.attempts + 1, last_error=None)
                )
            if failure is not None:
                await session.execute(
                    update(table)
                    .where(table.c.id == failure[0])
                    .values(attempts=table.c.attempts + 1, last_error=repr(failure[1])[:2000])
                )
            await session.commit()
        for _row_id, topic, _published_at in sent:
            OUTBOX_PUBLISHED.labels(self.service, topic).inc()
        if failure is not None:
            raise failure[1]
        return len(sent)

    @contextlib.asynccontextmanager
    async def _sole_publisher(self, session: AsyncSession) -> AsyncIterator[bool]:
        """Whether this relay is the one replica publishing, for as long as the context lasts."""
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            # Held until the transaction ends, which is after the rows are marked.
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
