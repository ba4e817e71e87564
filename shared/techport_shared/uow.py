"""The unit of work: one database transaction that holds a state change, the events it causes (to the
outbox) and, for a consumer, the processed-message mark of the event that caused it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from techport_shared.db import SessionFactory
from techport_shared.envelope import Envelope, to_binary
from techport_shared.messaging import MessagingTables


class DuplicateMessage(Exception):
    """Another transaction handled the same (consumer, ce_source, ce_id) first."""


class UnitOfWork:
    def __init__(
        self,
        sessions: SessionFactory,
        tables: MessagingTables,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._tables = tables
        self._on_commit = on_commit
        self._session: AsyncSession | None = None
        self._pending: list[tuple[str, Envelope]] = []
        self._claimed: tuple[str, str, str] | None = None
        self._after_commit: list[Callable[[], None]] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("use the unit of work inside `async with`")
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._pending = []
        self._claimed = None
        self._after_commit = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self.session, None
        try:
            if session.in_transaction():
                await session.rollback()
        finally:
            await session.close()

    def emit(self, topic: str, envelope: Envelope) -> None:
        """Queue an event; it is written to the outbox in this transaction, on commit."""
        self._pending.append((topic, envelope))

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once this transaction has committed (e.g. update an in-memory index)."""
        self._after_commit.append(action)

    @property
    def emitted(self) -> list[tuple[str, Envelope]]:
        return list(self._pending)

    async def claim(self, consumer: str, source: str, event_id: str) -> bool:
        """Mark an incoming event as handled by `consumer` in this transaction. False if it already was."""
        if await self._already_processed(consumer, source, event_id):
            return False
        table = self._tables.processed
        try:
            await self.session.execute(
                insert(table).values(
                    consumer=consumer, ce_source=source, ce_id=event_id, processed_at=datetime.now(UTC)
                )
            )
        except IntegrityError:
            # A concurrent handler of the same event inserted first (PostgreSQL waits for it, then refuses).
            await self.session.rollback()
            return False
        self._claimed = (consumer, source, event_id)
        return True

    async def _already_processed(self, consumer: str, source: str, event_id: str) -> bool:
        table = self._tables.processed
        found = await self.session.execute(
            select(table.c.ce_id).where(
                table.c.consumer == consumer, table.c.ce_source == source, table.c.ce_id == event_id
            )
        )
        return found.first() is not None

    async def commit(self) -> None:
        now = datetime.now(UTC)
        if self._pending:
            rows = []
            for topic, envelope in self._pending:
                record = to_binary(envelope)
                rows.append(
                    {
                        "topic": topic,
                        "message_key": record.key.decode() if record.key is not None else None,
                        "ce_id": envelope.id,
                        "ce_type": envelope.type,
                        "headers": record.str_headers(),
                        "value": record.value,
                        "created_at": now,
                        "attempts": 0,
                    }
                )
            await self.session.execute(insert(self._tables.outbox), rows)
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            if self._claimed is not None and await self._already_processed(*self._claimed):
                raise DuplicateMessage() from None
            raise
        had_events = bool(self._pending)
        self._pending = []
        if had_events and self._on_commit is not None:
            self._on_commit()
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()
