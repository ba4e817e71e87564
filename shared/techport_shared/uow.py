"""The unit of work: one database transaction that holds a state change, the events it causes (to the
outbox) and, for a consumer, the processed-message mark of the event that caused it.

A service subclasses it to name its repositories (`_open`); handlers and the API see those and `commit()` /
`rollback()`, never the session. A rollback drops the events queued since the last commit and the actions
waiting for it. Inside `batch()` (a consumer's batch of records in one transaction) a handler's `commit()`
only marks its record done: the batch commits once, at its end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from techport_shared.db import HeldRows, SessionFactory, keys_in
from techport_shared.envelope import Envelope, to_binary
from techport_shared.messaging import MessagingTables


class Forgets(Protocol):
    def forget(self) -> None:
        """Drop what was kept about the transaction that rolled back."""


F = TypeVar("F", bound=Forgets)


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
        # Ordered, and a key found in O(1): a batch of 200 records asks it 200 times.
        self._claimed: dict[tuple[str, str, str], None] = {}
        self._after_commit: list[Callable[[], None]] = []
        self._on_rollback: list[Callable[[], None]] = []
        self._batch = False
        # The batch's processed marks read ahead: key -> handled before.
        self._read_ahead: dict[tuple[str, str, str], bool] = {}
        # What repositories hold for the transaction (read rows, caches): forgotten when it rolls back.
        self._held_state: list[Forgets] = []
        self.committed = False

    # --- what subclasses give handlers ----------------------------------------------------------------------
    def _open(self, session: AsyncSession) -> None:
        """Name the repositories of this service on `session` (overridden by each service)."""

    def _held(self, session: AsyncSession) -> HeldRows:
        """The held rows of this transaction, for a repository: forgotten when it rolls back."""
        return self._forgotten_on_rollback(HeldRows(session))

    def _forgotten_on_rollback(self, state: F) -> F:
        """A repository's own state about this transaction (a cache of what it read), forgotten with it."""
        self._held_state.append(state)
        return state

    @property
    def _db(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("use the unit of work inside `async with`")
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._pending, self._claimed, self._after_commit, self._on_rollback = [], {}, [], []
        self._read_ahead, self._held_state = {}, []
        self.committed = False
        self._open(self._session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._db, None
        try:
            if session.in_transaction():
                await session.rollback()
        finally:
            await session.close()

    # --- events and actions ---------------------------------------------------------------------------------
    def emit(self, topic: str, envelope: Envelope) -> None:
        """Queue an event; it is written to the outbox in this transaction, on commit."""
        self._pending.append((topic, envelope))

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once this transaction has committed (e.g. update an in-memory index)."""
        self._after_commit.append(action)

    def on_rollback(self, action: Callable[[], None]) -> None:
        """Run `action` if this transaction is rolled back (undo what was applied ahead of the commit)."""
        self._on_rollback.append(action)

    @property
    def emitted(self) -> list[tuple[str, Envelope]]:
        return list(self._pending)

    def mark(self) -> int:
        """Where the queue of events stands, for `discard_since` (a refused record in a batch)."""
        return len(self._pending)

    def discard_since(self, mark: int) -> None:
        """Drop the events queued since `mark`: a refused use case emits nothing."""
        del self._pending[mark:]

    # --- the processed-messages mark ------------------------------------------------------------------------
    async def claim(self, consumer: str, source: str, event_id: str) -> bool:
        """Mark an incoming event as handled by `consumer` in this transaction. False if it already was
        (or if a concurrent transaction marked it first; this one is then rolled back).

        Inside `batch()` the marks are written together at the batch's commit, where a concurrent mark
        raises DuplicateMessage and the caller handles the batch's records again one at a time."""
        key = (consumer, source, event_id)
        if key in self._claimed:
            return False
        handled = self._read_ahead.get(key)
        if handled is None:  # not read ahead (an unreadable record's place, or no batch)
            handled = await self.processed(*key)
        if handled:
            return False
        self._claimed[key] = None
        if self._batch:
            return True
        try:
            await self._insert_claims([key])
        except IntegrityError:
            # A concurrent handler of the same event inserted first (PostgreSQL waits for it, then refuses).
            await self.rollback()
            return False
        return True

    async def _insert_claims(self, keys: list[tuple[str, str, str]]) -> None:
        now = datetime.now(UTC)
        await self._db.execute(
            insert(self._tables.processed),
            [{"consumer": c, "ce_source": s, "ce_id": i, "processed_at": now} for c, s, i in keys],
        )

    async def load_processed(self, keys: list[tuple[str, str, str]]) -> None:
        """Which of a batch's events were handled before, in one query; `claim` then asks nothing more (a
        concurrent mark still fails the batch's commit, as without it)."""
        table = self._tables.processed
        self._read_ahead = dict.fromkeys(keys, False)
        columns = (table.c.consumer, table.c.ce_source, table.c.ce_id)
        for condition in keys_in(columns, keys):
            rows = await self._db.execute(select(*columns).where(condition))
            self._read_ahead.update(((r[0], r[1], r[2]), True) for r in rows)

    async def processed(self, consumer: str, source: str, event_id: str) -> bool:
        table = self._tables.processed
        found = await self._db.execute(
            select(table.c.ce_id).where(
                table.c.consumer == consumer, table.c.ce_source == source, table.c.ce_id == event_id
            )
        )
        return found.first() is not None

    # --- ending the transaction -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Handlers' commits inside mark their record done; the caller commits with `commit_batch`."""
        self._batch = True
        try:
            yield
        finally:
            self._batch = False

    async def commit(self) -> None:
        if self._batch:
            self.committed = True
            return
        await self._commit()

    async def commit_batch(self) -> None:
        if self._claimed:
            try:
                await self._insert_claims(list(self._claimed))
            except IntegrityError:
                await self.rollback()
                raise DuplicateMessage() from None
        await self._commit()

    async def _commit(self) -> None:
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
            await self._db.execute(insert(self._tables.outbox), rows)
        try:
            await self._db.commit()
        except IntegrityError:
            claimed = list(self._claimed)
            await self.rollback()
            if any([await self.processed(*key) for key in claimed]):
                raise DuplicateMessage() from None
            raise
        self.committed = True
        self._read_ahead = {}
        had_events = bool(self._pending)
        self._pending, self._claimed, self._on_rollback = [], {}, []
        if had_events and self._on_commit is not None:
            self._on_commit()
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()

    async def rollback(self) -> None:
        """Undo the transaction: its writes, its queued events, the actions waiting for its commit."""
        await self._db.rollback()
        self._pending, self._claimed, self._after_commit = [], {}, []
        self._read_ahead = {}
        for state in self._held_state:
            state.forget()
        undo, self._on_rollback = self._on_rollback, []
        for action in reversed(undo):
            action()
