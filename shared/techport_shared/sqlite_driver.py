"""aiosqlite with one trip to its thread per statement.

aiosqlite runs each call on the connection's own thread, and SQLAlchemy's adapter makes four calls per
statement (open a cursor, execute, fetch, close). Each trip hands the GIL over and wakes the event loop:
about 0.15 ms of CPU, and, while the loop is busy with other tasks, up to the interpreter's switch interval
(5 ms) of waiting. Measured here: a SELECT by primary key cost 0.6 ms of CPU (0.05 ms through SQLAlchemy
without asyncio), and 40 ms of wall time while another task kept the loop busy; in this form, 0.25 ms and
1.6 ms (`tests/shared/test_sqlite_driver.py` checks the behaviour).

Here a statement is one trip: the cursor is opened, executed, its rows fetched and closed on the thread, and
what SQLAlchemy reads afterwards (rows, description, rowcount, lastrowid) is kept. SQLite still runs off the
event loop, so a statement that waits for another connection's lock does not stop this process's tasks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from functools import partial
from typing import Any

import aiosqlite


class _Result:
    __slots__ = ("description", "lastrowid", "rowcount", "rows")

    def __init__(self, cursor: sqlite3.Cursor, rows: list[Any]) -> None:
        self.rows = rows
        self.description = cursor.description
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid


def _run(connection: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Result:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return _Result(cursor, rows)
    finally:
        cursor.close()


class StatementCursor:
    """The part of aiosqlite's cursor that SQLAlchemy's adapter uses, a statement per trip."""

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self._result: _Result | None = None
        self._position = 0

    async def __aenter__(self) -> StatementCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> StatementCursor:
        run = partial(_run, self._connection._conn, sql, () if parameters is None else parameters, False)
        self._result, self._position = await self._connection._execute(run), 0
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> StatementCursor:
        run = partial(_run, self._connection._conn, sql, parameters, True)
        self._result, self._position = await self._connection._execute(run), 0
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


class OneTripConnection(aiosqlite.Connection):
    def cursor(self) -> Any:  # SQLAlchemy awaits what this returns, or enters it: both are the cursor
        return _Ready(StatementCursor(self))


class _Ready:
    """`await connection.cursor()` and `async with connection.cursor()`, as aiosqlite allows both."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: StatementCursor) -> None:
        self._cursor = cursor

    def __await__(self) -> Any:
        if False:  # pragma: no cover - makes this a generator without a trip
            yield
        return self._cursor

    async def __aenter__(self) -> StatementCursor:
        return self._cursor

    async def __aexit__(self, *_exc: object) -> None:
        await self._cursor.close()


def connect(database: str, **kwargs: Any) -> OneTripConnection:
    """What `aiosqlite.connect` does, with this module's connection class."""
    return OneTripConnection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size=64)
