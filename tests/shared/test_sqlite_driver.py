"""The SQLite driver (statements on the event loop, commits on a thread) behaves as a DBAPI cursor must for
SQLAlchemy, and a statement that waits for another connection's lock does not stop the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from techport_shared.db import create_engine


async def test_rows_counts_ids_and_returning_come_back_as_sqlalchemy_expects(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'driver.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
            inserted = await connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
            assert inserted.lastrowid == 1
            many = [{"name": "b"}, {"name": "c"}]
            await connection.execute(text("INSERT INTO t (name) VALUES (:name)"), many)
            returned = await connection.execute(text("INSERT INTO t (name) VALUES ('d') RETURNING id, name"))
            assert returned.all() == [(4, "d")]
            updated = await connection.execute(text("UPDATE t SET name = 'x' WHERE id <= 2"))
            assert updated.rowcount == 2
            rows = await connection.execute(text("SELECT id, name FROM t ORDER BY id"))
            assert list(rows.keys()) == ["id", "name"]
            assert rows.fetchmany(1) == [(1, "x")]
            assert rows.fetchone() == (2, "x")
            assert rows.all() == [(3, "c"), (4, "d")]
            assert (await connection.execute(text("SELECT name FROM t WHERE id = 99"))).first() is None
        async with engine.connect() as connection:  # what the first transaction committed is there
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 4
    finally:
        await engine.dispose()


async def test_a_statement_waiting_for_a_lock_leaves_the_event_loop_running(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'locks.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        async with engine.connect() as holder, engine.connect() as waiter:
            await holder.execute(text("INSERT INTO t (id) VALUES (1)"))  # holds the write lock
            second = asyncio.create_task(waiter.execute(text("INSERT INTO t (id) VALUES (2)")))
            started = time.monotonic()
            await asyncio.sleep(0.3)
            assert not second.done()  # it waits for the lock...
            assert ticks >= 10  # ...while the loop goes on with other tasks
            await holder.commit()
            await second  # and it goes through once the lock is free
            await waiter.commit()
            assert time.monotonic() - started < 10
        ticker.cancel()
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2
    finally:
        await engine.dispose()


async def test_statements_run_on_the_event_loop_and_a_commit_off_it(tmp_path: Path) -> None:
    # A commit waits for the disk (the WAL's fsync): on the loop, that wait would hold up every other task.
    engine = create_engine(f"sqlite:///{tmp_path / 'threads.db'}")
    ran_on: dict[str, set[int]] = {}

    @event.listens_for(engine.sync_engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        def traced(statement: str) -> None:
            ran_on.setdefault(statement.split()[0].upper(), set()).add(threading.get_ident())

        dbapi_connection.driver_connection._conn.set_trace_callback(traced)

    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            await connection.execute(text("INSERT INTO t (id) VALUES (1)"))
        loop_thread = threading.get_ident()
        assert ran_on["INSERT"] == {loop_thread}
        assert ran_on["COMMIT"] and loop_thread not in ran_on["COMMIT"]
        async with engine.connect() as connection:  # and what it committed is there
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    finally:
        await engine.dispose()
