"""Database engines: a SQLite file by default, PostgreSQL by URL; async throughout (aiosqlite, asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SessionFactory = async_sessionmaker[AsyncSession]


def async_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async driver for them."""
    parsed = make_url(url)
    driver = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
    }
    if parsed.drivername in driver:
        parsed = parsed.set(drivername=driver[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


def sqlite_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{path.resolve()}"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


@contextlib.asynccontextmanager
async def sqlite_file_lock(url: str, name: str, wait: bool = True) -> AsyncIterator[bool]:
    """An exclusive lock shared by the processes using one SQLite file: the file `<db>.<name>-lock`.

    Yields whether it is held: with `wait=False` it may not be (another process holds it). Any database other
    than a SQLite file needs no such lock here, and yields True.
    """
    database = make_url(url).database if is_sqlite(url) else None
    if not database or database == ":memory:":
        yield True
        return
    lock = os.open(f"{database}.{name}-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if wait:
            # In a thread: the holder may be another task of this very event loop, which must go on running.
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            held = True
        else:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
        yield held
    finally:
        os.close(lock)  # closing releases the lock


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    url = async_url(url)
    # SQL parameters are personal data (names, addresses): never in an exception text or a log line.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the outbox relay read while a handler writes; busy_timeout waits out short locks.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


def json_field() -> Any:
    """A SQLModel field stored as JSON (lists and objects of the canonical event data)."""
    from sqlalchemy import JSON, Column
    from sqlmodel import Field

    return Field(sa_column=Column(JSON, nullable=False))


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A moment read back from the database: SQLite returns it without its zone, which is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Rows(Protocol):
    """What a service's repository offers to read and delete rows by key."""

    async def get(self, model: type[Any], key: str) -> Any: ...

    async def delete(self, row: Any) -> None: ...


async def erasure_stands(
    rows: Rows, marker: type[Any], student_id: str, event_type: str, occurred_at: datetime
) -> bool:
    """Whether the erased marker of a student (a row keyed by student id with `erased_at`) turns this student
    event away. A registration made after the erasure lifts it: the marker is deleted, the event goes on."""
    from techport_shared.events import revives

    erased = await rows.get(marker, student_id)
    if erased is None:
        return False
    if not revives(event_type, occurred_at, aware(erased.erased_at)):
        return True
    await rows.delete(erased)
    return False


def utc_field(nullable: bool = False) -> Any:
    """A SQLModel field for a moment in time, stored with its time zone."""
    from sqlalchemy import Column, DateTime
    from sqlmodel import Field

    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))
