"""SQLite for SQLAlchemy's asyncio engine, run on the event loop itself, waiting for locks asynchronously.

aiosqlite runs each call on a thread of its own, and SQLAlchemy's adapter makes four calls per statement (open
a cursor, execute, fetch, close). Each trip hands the GIL over and wakes the event loop. Measured here: a
SELECT by primary key cost 0.6 ms of CPU through aiosqlite against 0.05 ms through SQLAlchemy without
asyncio, and 40 ms of wall time while another task kept the loop busy; a consumer batch of a few records
waited 40-70 ms. Here: 0.07 ms, busy loop or not.

A statement on a local SQLite file takes microseconds, so here it runs where it is called (a commit, which
waits for the disk, runs on a thread: see `InlineConnection.commit`). The one thing that can make a statement
wait is another connection's lock (a handler of this process that holds a write transaction across an
`await`, or another process): SQLite's own busy handler would then block the whole event loop, and with it
the very task that holds the lock. So the busy handler is off (`busy_timeout` 0) and a statement refused as
busy is tried again after an asynchronous sleep, for up to `BUSY_TIMEOUT_S`.
`tests/shared/test_sqlite_driver.py` shows both: what SQLAlchemy reads of a cursor, and a writer waiting for
another's lock while the loop goes on.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0
# Busy for a lock another connection holds (or while it recovers the WAL): worth waiting for. Not
# SQLITE_BUSY_SNAPSHOT, which only a new transaction can get past.
_WAIT_FOR = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_RECOVERY}


class _Result:
    __slots__ = ("description", "lastrowid", "rowcount", "rows")

    def __init__(self, cursor: sqlite3.Cursor, rows: list[Any]) -> None:
        self.rows = rows
        self.description = cursor.description
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid


def _statement(connection: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Result:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return _Result(cursor, cursor.fetchall() if cursor.description else [])
    finally:
        cursor.close()


class StatementCursor:
    """The part of a DBAPI cursor that SQLAlchemy's asyncio adapter uses, in aiosqlite's async form."""

    arraysize = 1

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        self._result: _Result | None = None
        self._position = 0

    async def __aenter__(self) -> StatementCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> StatementCursor:
        connection = self._connection._conn
        arguments = () if parameters is None else parameters
        self._result = await self._connection.run(lambda: _statement(connection, sql, arguments, False))
        self._position = 0
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> StatementCursor:
        connection, rows = self._connection._conn, list(parameters)
        self._result = await self._connection.run(lambda: _statement(connection, sql, rows, True))
        self._position = 0
        return self

    def _rows(self, count: int | None) -> list[Any]:
        if self._result is None:
            return []
        rows = self._result.rows
        end = len(rows) if count is None else min(len(rows), self._position + count)
        taken, self._position = rows[self._position : end], end
        return taken

    async def fetchall(self) -> list[Any]:
        return self._rows(None)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._rows(size or self.arraysize)

    async def fetchone(self) -> Any:
        rows = self._rows(1)
        return rows[0] if rows else None

    async def close(self) -> None:
        # SQLAlchemy may read rowcount and lastrowid after closing: only the rows go.
        if self._result is not None:
            self._result.rows = []

    @property
    def description(self) -> Any:
        return self._result.description if self._result is not None else None

    @property
    def rowcount(self) -> int:
        return self._result.rowcount if self._result is not None else -1

    @property
    def lastrowid(self) -> int | None:
        return self._result.lastrowid if self._result is not None else None


class _RunNow:
    """aiosqlite's queue to its thread, which SQLAlchemy's adapter uses directly to set the isolation level:
    here the function runs at once and the future gets its outcome."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class InlineConnection:
    """The part of `aiosqlite.Connection` that SQLAlchemy's aiosqlite dialect uses."""

    def __init__(self, connection: sqlite3.Connection, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._busy_timeout_s = busy_timeout_s
        self._tx = _RunNow()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def run(self, function: Callable[[], T], on_thread: bool = False) -> T:
        """`function` now (on a thread if `on_thread`); while SQLite answers that another connection holds the
        lock, again a bit later."""
        deadline, delay = time.monotonic() + self._busy_timeout_s, 0.001
        while True:
            try:
                return await asyncio.to_thread(function) if on_thread else function()
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in _WAIT_FOR or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def cursor(self) -> StatementCursor:
        # SQLAlchemy enters what this returns (`async with`); nothing awaits it.
        return StatementCursor(self)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def commit(self) -> None:
        # On a thread: a commit waits for the disk (the WAL's fsync), 2 ms at the median and up to 30 ms
        # while other processes write too (the pipeline benchmark's steady rate), and on the loop that wait
        # held up everything else the service does: 6-7% of its time. (The connection is this transaction's
        # alone until the commit returns.)
        connection = self._conn
        await self.run(connection.commit, on_thread=True)

    async def rollback(self) -> None:
        connection = self._conn
        await self.run(connection.rollback)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def connect(database: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, **kwargs: Any) -> InlineConnection:
    """An open connection; SQLite's own waiting for locks off (see the module's note)."""
    connection = sqlite3.connect(database, timeout=0, check_same_thread=False, **kwargs)
    return InlineConnection(connection, busy_timeout_s)
