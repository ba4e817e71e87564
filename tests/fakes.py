"""Fakes for fast tests of the services' rules, without a broker: a service's own unit of work over an
in-memory SQLite database (its real repositories, no relay), what it emitted read back from its outbox, and
a publisher that takes records in memory and refuses the ones a broker would."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from techport_shared.db import SessionFactory, session_factory
from techport_shared.envelope import Envelope, KafkaRecord, Origin, from_record
from techport_shared.identity import Identity
from techport_shared.kafka import PermanentlyRefused
from techport_shared.messagebus import Context
from techport_shared.messaging import MessagingTables
from techport_shared.uow import UnitOfWork


@dataclass
class FakeDatabase:
    """The fake unit of work's store: `uow()` is the service's own unit of work class on it."""

    engine: AsyncEngine
    sessions: SessionFactory
    tables: MessagingTables
    unit_of_work: type[UnitOfWork]

    def uow(self) -> Any:
        return self.unit_of_work(self.sessions, self.tables)

    async def emitted(self, topic: str | None = None) -> list[Envelope]:
        """The events committed to the outbox (what the relay would publish), oldest first."""
        outbox = self.tables.outbox
        query = select(outbox).order_by(outbox.c.id)
        if topic is not None:
            query = query.where(outbox.c.topic == topic)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            from_record(r.message_key.encode(), r.value, [(k, v.encode()) for k, v in r.headers.items()])
            for r in rows
        ]

    async def outbox_values(self) -> list[bytes]:
        async with self.sessions() as session:
            return [row.value for row in (await session.execute(select(self.tables.outbox))).all()]

    async def close(self) -> None:
        await self.engine.dispose()


async def fake_database(
    metadata: MetaData, tables: MessagingTables, unit_of_work: type[UnitOfWork]
) -> FakeDatabase:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return FakeDatabase(engine, session_factory(engine), tables, unit_of_work)


@contextlib.contextmanager
def issued(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The statements (and their parameters) run on `engine` meanwhile."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if not many:
            statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)


def context(actor: Identity, source: str | None = None, channel: str = "api") -> Context:
    origin = Origin.of_request("fast-test")
    return Context(actor, Origin(origin.correlation_id, None, origin.occurred_at, channel), source)


@dataclass
class FakePublisher:
    """Takes records in memory; refuses for good what is larger than a broker takes, and can be made
    unreachable (an outage)."""

    max_bytes: int = 1_000_000
    away: bool = False
    sent: list[tuple[str, KafkaRecord]] = field(default_factory=list)
    on_send: Callable[[str, KafkaRecord], None] | None = None

    async def send(self, topic: str, record: KafkaRecord) -> None:
        if self.away:
            raise ConnectionError("the broker is away")
        size = len(record.value) + sum(len(k) + len(v) for k, v in record.headers.items())
        if size > self.max_bytes:
            raise PermanentlyRefused(f"MessageSizeTooLargeError: {size} bytes")
        self.sent.append((topic, record))

    def values(self, topic: str) -> list[Any]:
        return [json.loads(record.value) for t, record in self.sent if t == topic]
