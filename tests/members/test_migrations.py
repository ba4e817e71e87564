"""Members' Alembic migrations build exactly the schema of its models, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from techport_members.main import MIGRATIONS
from techport_members.store import metadata
from techport_shared.db import create_engine
from techport_shared.migrations import upgrade


async def test_migrations_match_the_models(db_url: str) -> None:
    await upgrade(MIGRATIONS, db_url)
    await upgrade(MIGRATIONS, db_url)  # running again is harmless
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == [], f"models changed without a migration: {diff}"
