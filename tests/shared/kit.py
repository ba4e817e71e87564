"""A minimal service built from the shared building blocks, for testing them over real parts: a consumer of
`student.erased` events whose effect is a row per subject; a subject starting with "fail" fails."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from techport_shared.consumer import DeadLetters, ReliableConsumer
from techport_shared.db import SessionFactory, create_engine, session_factory
from techport_shared.envelope import Envelope
from techport_shared.events import StudentErased, ce_type
from techport_shared.kafka import BrokerPublisher, create_broker
from techport_shared.messagebus import Context, EventDispatcher, MessageBus
from techport_shared.messaging import MessagingTables, messaging_tables
from techport_shared.settings import ConsumerSettings, KafkaSettings
from techport_shared.uow import UnitOfWork

metadata = MetaData()
tables = messaging_tables(metadata)
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(100), nullable=False),
    Column("ce_id", String(200), nullable=False),
)


class Effects:
    """The kit's repository: a row per effect."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, subject: str, ce_id: str) -> None:
        await self._session.execute(insert(effects).values(subject=subject, ce_id=ce_id))


class KitUnitOfWork(UnitOfWork):
    effects: Effects

    def _open(self, session: AsyncSession) -> None:
        self.effects = Effects(session)


@dataclass
class KitDatabase:
    engine: AsyncEngine
    sessions: SessionFactory
    tables: MessagingTables

    def uow(self, on_commit=None) -> KitUnitOfWork:
        return KitUnitOfWork(self.sessions, self.tables, on_commit)

    async def count(self, table: Table) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)

    async def close(self) -> None:
        await self.engine.dispose()


async def open_database(url: str) -> KitDatabase:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return KitDatabase(engine, session_factory(engine), tables)


ERASED = ce_type("student.erased")
FAST_RETRIES = ConsumerSettings(max_attempts=3, backoff_initial_s=0.05, backoff_max_s=0.2)


def erased_event(subject: str, source: str = "/test", event_id: str | None = None) -> Envelope:
    return Envelope(
        type=ERASED,
        source=source,
        subject=subject,
        data={"student_id": subject},
        id=event_id or str(uuid.uuid4()),
    )


async def record_effect(data: StudentErased, uow: KitUnitOfWork, context: Context) -> None:
    if data.student_id.startswith("fail"):
        raise ValueError(f"cannot handle {data.student_id}")
    await uow.effects.add(data.student_id, context.origin.causation_id or "")
    await uow.commit()


@asynccontextmanager
async def running_consumer(
    settings: KafkaSettings,
    topic: str,
    db: KitDatabase,
    group: str,
    consumer_name: str = "kit",
    handler=record_effect,
) -> AsyncIterator[ReliableConsumer]:
    broker = create_broker(settings, "kit")
    consumer = ReliableConsumer("kit", broker, DeadLetters("kit", BrokerPublisher(broker)), FAST_RETRIES)
    dispatcher = EventDispatcher("kit", consumer_name, MessageBus(db.uow, {StudentErased: handler}))
    consumer.subscribe(topic, group, dispatcher)
    await broker.start()
    try:
        yield consumer
    finally:
        await broker.stop()


async def effect_subjects(db: KitDatabase) -> list[str]:
    async with db.sessions() as session:
        return list((await session.scalars(select(effects.c.subject).order_by(effects.c.id))).all())


async def wait_for_effects(db: KitDatabase, expected: list[str], timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while sorted(await effect_subjects(db)) != sorted(expected):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"effects {await effect_subjects(db)} != {expected}")
        await asyncio.sleep(0.1)
