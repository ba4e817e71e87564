"""Database engines: a SQLite file by default, PostgreSQL by URL; async throughout (aiosqlite, asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, event, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import attributes, instrumentation
from sqlmodel._compat import finish_init

from techport_shared import sqlite_driver

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
        database = make_url(url).database or ":memory:"

        async def connect() -> Any:
            # Statements on the event loop, locks waited for asynchronously (see sqlite_driver).
            return sqlite_driver.connect(database)

        engine = create_async_engine(url, async_creator=connect, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the outbox relay read while a handler writes. (Waiting for locks is the driver's.)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
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


class RowInit:
    """A table model's constructor: SQLModel's, minus its cost. First in a service's table base class.

    SQLModel builds a table row through `__setattr__` for every field, which sets each value through
    SQLAlchemy and then again through pydantic: most of a row's construction, and rows are made for every
    consumed event (a tenth of notifications' and matching's CPU at the pipeline benchmark's steady rate).
    Here each field's value (or its default) is set once, through SQLAlchemy's attribute, as the ORM's own
    constructor does; the pydantic bookkeeping is what SQLModel leaves (fields set: the ones given). A name
    that is not a field is an error here, where SQLModel drops it without a word.
    """

    def __init__(self, **values: Any) -> None:
        if not finish_init.get():  # SQLModel's model_validate builds the row itself
            return
        # Configured by now: SQLAlchemy's constructor fired the init event, which configures the mappers.
        columns = _columns(type(self))
        assert columns is not None
        state = attributes.instance_state(self)
        given = set(values)
        for name, impl, field in columns.fields:
            if name in values:
                value = values.pop(name)
            elif field.is_required():
                continue
            else:
                value = field.get_default(call_default_factory=True)
            impl.set(state, state.dict, value, None)
        if values:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(values))}")
        object.__setattr__(self, "__pydantic_fields_set__", given)

    def __setattr__(self, name: str, value: Any) -> None:
        columns = _columns(type(self))
        impl = columns.impls.get(name) if columns is not None else None
        if impl is None:  # not a column: SQLModel's way (its instance state, pydantic's private attributes)
            super().__setattr__(name, value)
            return
        # A column, set once through SQLAlchemy; pydantic (no validation on assignment for a table model)
        # would only set the same value again and note the field as set.
        impl.set(attributes.instance_state(self), self.__dict__, value, None)
        fields_set: set[str] = object.__getattribute__(self, "__pydantic_fields_set__")
        fields_set.add(name)


@dataclass(frozen=True)
class _Columns:
    """A table model's fields, each with its SQLAlchemy attribute (`impls`: the same, by name)."""

    fields: list[tuple[str, Any, Any]]
    impls: dict[str, Any]


_COLUMNS: dict[type[Any], _Columns] = {}


def _columns(model: type[Any]) -> _Columns | None:
    """Worked out once per model; None while its mappers are not configured (the first row's own instance
    state is being installed)."""
    columns = _COLUMNS.get(model)
    if columns is None:
        manager = instrumentation.manager_of_class(model)
        model_fields: dict[str, Any] = model.model_fields
        fields = [(name, manager[name].impl, f) for name, f in model_fields.items()]
        if any(impl is None for _name, impl, _field in fields):
            return None
        columns = _COLUMNS[model] = _Columns(fields, {name: impl for name, impl, _field in fields})
    return columns


def aware(value: datetime) -> datetime:
    """A moment read back from the database: SQLite returns it without its zone, which is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class HeldRows:
    """A unit of work's reads by primary key, each asked of the database at most once.

    SQLAlchemy's identity map holds loaded rows only weakly, so a row read, copied into a domain value and let
    go is read again by the next handler of the batch; and a row that does not exist is asked for every time.
    Here rows read are held for the transaction, rows known absent are remembered, and `load` reads a whole
    batch's rows of a table in one query. `forget` on rollback (the unit of work calls it).
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._held: dict[tuple[type[Any], Any], Any] = {}
        self._absent: set[tuple[type[Any], Any]] = set()

    async def get(self, model: type[Any], key: Any) -> Any:
        if (model, key) in self._absent:
            return None
        if (held := self._held.get((model, key))) is not None:
            return held  # what the session would find in its identity map, without the way there
        row = await self.session.get(model, key)
        if row is None:
            self._absent.add((model, key))
        else:
            self._held[(model, key)] = row
        return row

    def add(self, row: Any) -> None:
        self.session.add(row)
        key = _key_of(row)
        if key is None:
            return  # its key comes from the database (autoincrement): nobody can have asked for it yet
        self._absent.discard((type(row), key))
        self._held[(type(row), key)] = row

    async def delete(self, row: Any) -> None:
        await self.session.delete(row)
        self.deleted(type(row), _key_of(row))

    def deleted(self, model: type[Any], key: Any) -> None:
        """A row deleted by a statement rather than `delete`."""
        self._held.pop((model, key), None)
        self._absent.add((model, key))

    async def load(self, model: type[Any], keys: Iterable[Any]) -> None:
        """Read the rows of `keys` (a batch's) in one query; the others are known absent from then on."""
        wanted = {k for k in keys if (model, k) not in self._held and (model, k) not in self._absent}
        if not wanted:
            return
        columns = sa_inspect(model).primary_key
        for condition in keys_in(columns, wanted if len(columns) > 1 else [(k,) for k in wanted]):
            for row in (await self.session.scalars(select(model).where(condition))).all():
                self._held[(model, _key_of(row))] = row
        self._absent.update((model, k) for k in wanted if (model, k) not in self._held)

    def forget(self) -> None:
        self._held.clear()
        self._absent.clear()


def keys_in(
    columns: Sequence[ColumnElement[Any]], keys: Iterable[tuple[Any, ...]], chunk: int = 500
) -> list[ColumnElement[bool]]:
    """Conditions that together select the rows whose (`columns`) are among `keys`, each answered by a search
    of an index on `columns`: one query per condition.

    Not `tuple_(*columns).in_(keys)`: SQLite answers a row value IN a list by scanning the whole index (its
    plan says SCAN ... USING COVERING INDEX), so a batch's read would cost as much as the table is long and
    grow with every event ever handled. Keys are grouped by all but their last part instead, which is how
    they come (a batch's events share a consumer and a source): `a = ? AND b = ? AND c IN (...)`."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for key in keys:
        groups.setdefault(tuple(key[:-1]), []).append(key[-1])
    *leading, last = columns
    conditions: list[ColumnElement[bool]] = []
    for prefix, values in groups.items():
        for start in range(0, len(values), chunk):
            part = last.in_(values[start : start + chunk])
            conditions.append(and_(*(c == v for c, v in zip(leading, prefix, strict=True)), part))
    return conditions


def _key_of(row: Any) -> Any:
    key = sa_inspect(type(row)).primary_key_from_instance(row)
    if any(part is None for part in key):
        return None
    return key[0] if len(key) == 1 else tuple(key)


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
