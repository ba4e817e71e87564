"""What a batch reads costs an index search, not a scan of a table that grows with every event ever handled.

SQLite answers `(a, b, c) IN (VALUES ...)` by scanning the whole index, so a consumer's dedupe read once cost
as much as its processed-messages table was long; the plans below are SQLite's own (EXPLAIN QUERY PLAN) for
the statements each read really issues."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from techport_matching.store import MatchingUnitOfWork
from techport_matching.store import metadata as matching_metadata
from techport_matching.store import tables as matching_tables
from techport_notifications.domain import Recipient
from techport_notifications.store import NotificationsUnitOfWork, RecipientRow
from techport_notifications.store import metadata as notifications_metadata
from techport_notifications.store import tables as notifications_tables
from techport_shared.db import create_engine, session_factory

from tests.fakes import issued
from tests.shared.kit import open_database


def plans(path: Path, statements: list[tuple[str, Any]], table: str) -> list[str]:
    """SQLite's plan steps on `table` for `statements`."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [
            step[3]
            for sql, parameters in statements
            for step in db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters or ())
            if f" {table} " in f" {step[3]} "
        ]


def searched_only(steps: list[str], table: str) -> None:
    assert steps, f"nothing read {table}"
    assert all(step.startswith(f"SEARCH {table} ") for step in steps), steps


async def test_a_batchs_dedupe_read_searches_the_processed_messages(tmp_path: Path) -> None:
    path = tmp_path / "kit.db"
    db = await open_database(f"sqlite:///{path}")
    try:
        keys = [("members", f"/partners/school-{i % 2}", f"event-{i}") for i in range(40)]
        async with db.uow() as uow:
            await uow._insert_claims(keys[:20])
            await uow._commit()
        async with db.uow() as uow:
            with issued(db.engine) as statements:
                await uow.load_processed(keys)
            # The read still finds exactly what was handled before.
            assert [key for key in keys if await uow.claim(*key)] == keys[20:]
        searched_only(plans(path, statements, "processed_messages"), "processed_messages")
        assert len(statements) == 2  # a query per (consumer, source), not per event
    finally:
        await db.close()


async def _engine(path: Path, metadata: Any) -> AsyncEngine:
    engine = create_engine(f"sqlite:///{path}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return engine


async def test_notifications_batch_reads_search_items_and_recipients(tmp_path: Path) -> None:
    path = tmp_path / "notifications.db"
    engine = await _engine(path, notifications_metadata)
    try:
        sessions = session_factory(engine)
        recipients = {Recipient("student", f"s-{i}") for i in range(5)} | {Recipient("organisation", "acme")}
        async with NotificationsUnitOfWork(sessions, notifications_tables) as uow:
            with issued(engine) as statements:
                await uow.notifications.preload(
                    {"s-1"}, recipients, {"match_found_student"}, {f"match-{i}" for i in range(30)}
                )
        searched_only(plans(path, statements, "notification_items"), "notification_items")
        # Recipients are keyed by (kind, id): read a batch at a time through the held rows.
        searched_only(plans(path, statements, "recipients"), "recipients")
        assert RecipientRow.__tablename__ == "recipients"
    finally:
        await engine.dispose()


async def test_whether_a_pair_reached_the_partnership_threshold_is_searched(tmp_path: Path) -> None:
    path = tmp_path / "matching.db"
    engine = await _engine(path, matching_metadata)
    try:
        async with MatchingUnitOfWork(session_factory(engine), matching_tables) as uow:
            with issued(engine) as statements:
                assert await uow.matching.pair_matches("acme", "college", first=3) == []
        searched_only(plans(path, statements, "matches"), "matches")
    finally:
        await engine.dispose()
