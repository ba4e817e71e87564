"""A minimal service built from the shared building blocks, for testing them over real parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from techport_shared.db import SessionFactory, create_engine, session_factory
from techport_shared.messaging import MessagingTables, messaging_tables
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


@dataclass
class KitDatabase:
    engine: AsyncEngine
    sessions: SessionFactory
    tables: MessagingTables

    def uow(self, on_commit=None) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.tables, on_commit)

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
