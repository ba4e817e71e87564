"""The outbox and processed-messages tables on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from techport_shared.envelope import Envelope, from_record
from techport_shared.uow import DuplicateMessage

from tests.shared.kit import effects, open_database


@pytest.fixture
async def database(db_url: str):
    db = await open_database(db_url)
    yield db
    await db.close()


def _event(subject: str) -> Envelope:
    return Envelope(
        type="nl.techport.student.erased.v1", source="/test", subject=subject, data={"student_id": subject}
    )


async def test_state_and_events_commit_together(database) -> None:
    woken = []
    async with database.uow(on_commit=lambda: woken.append(True)) as uow:
        await uow.effects.add("a", "1")
        uow.emit("techport.students.v1", _event("a"))
        uow.emit("techport.students.v1", _event("b"))
        await uow.commit()
    assert await database.count(effects) == 1
    assert await database.count(database.tables.outbox) == 2
    assert woken == [True]
    async with database.sessions() as session:
        rows = (
            await session.execute(select(database.tables.outbox).order_by(database.tables.outbox.c.id))
        ).all()
    assert [r.message_key for r in rows] == ["a", "b"]
    stored = from_record(
        rows[0].message_key.encode(), rows[0].value, [(k, v.encode()) for k, v in rows[0].headers.items()]
    )
    assert stored.data == {"student_id": "a"}


async def test_nothing_is_written_without_commit(database) -> None:
    async with database.uow() as uow:
        await uow.effects.add("a", "1")
        uow.emit("techport.students.v1", _event("a"))
        await uow.claim("c", "/s", "1")
    assert await database.count(effects) == 0
    assert await database.count(database.tables.outbox) == 0
    assert await database.count(database.tables.processed) == 0


async def test_a_processed_event_is_claimed_once(database) -> None:
    async with database.uow() as uow:
        assert await uow.claim("consumer-a", "/partners/x", "evt-1")
        await uow.commit()
    async with database.uow() as uow:
        assert not await uow.claim("consumer-a", "/partners/x", "evt-1")
        # The key is (consumer, source, id): the same id from another source, or for another consumer, is new.
        assert await uow.claim("consumer-a", "/partners/y", "evt-1")
        assert await uow.claim("consumer-b", "/partners/x", "evt-1")
        await uow.commit()


async def test_concurrent_claims_of_one_event_let_one_through(database) -> None:
    outcomes: list[str] = []

    async def handle() -> None:
        async with database.uow() as uow:
            if not await uow.claim("c", "/s", "same"):
                outcomes.append("duplicate")
                return
            await uow.effects.add("x", "same")
            await asyncio.sleep(0.05)
            try:
                await uow.commit()
                outcomes.append("handled")
            except DuplicateMessage:
                outcomes.append("duplicate")

    await asyncio.gather(handle(), handle(), return_exceptions=False)
    assert sorted(outcomes) == ["duplicate", "handled"]
    assert await database.count(effects) == 1
