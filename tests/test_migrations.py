"""Every service's Alembic migrations build exactly the schema of its models, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from techport_gateway import main as gateway_main
from techport_gateway.store import metadata as gateway_metadata
from techport_matching import main as matching_main
from techport_matching.store import metadata as matching_metadata
from techport_members import main as members_main
from techport_members.store import metadata as members_metadata
from techport_notifications import main as notifications_main
from techport_notifications.store import metadata as notifications_metadata
from techport_shared.db import create_engine
from techport_shared.migrations import upgrade

SERVICES = {
    "gateway": (gateway_main.MIGRATIONS, gateway_metadata),
    "members": (members_main.MIGRATIONS, members_metadata),
    "matching": (matching_main.MIGRATIONS, matching_metadata),
    "notifications": (notifications_main.MIGRATIONS, notifications_metadata),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_migrations_match_the_models(service: str, db_url: str) -> None:
    migrations, metadata = SERVICES[service]
    await upgrade(migrations, db_url)
    await upgrade(migrations, db_url)  # running again is harmless
    assert await _differences(db_url, metadata) == [], f"{service}: models changed without a migration"


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_replicas_starting_together_migrate_one_at_a_time(service: str, db_url: str) -> None:
    # Init containers of three replicas run `migrate` at the same moment on an empty database.
    migrations, metadata = SERVICES[service]
    await asyncio.gather(*(upgrade(migrations, db_url) for _ in range(3)))
    assert await _differences(db_url, metadata) == []


async def _differences(db_url: str, metadata: MetaData) -> list:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()


def test_each_service_has_its_own_tables() -> None:
    # One database per service: a service's metadata holds only its own tables.
    assert members_metadata is not matching_metadata
    assert "matches" not in members_metadata.tables and "partnerships" not in members_metadata.tables
    assert {"outbox", "processed_messages"} <= set(members_metadata.tables) & set(matching_metadata.tables)
    assert all(isinstance(path, Path) and (path / "env.py").exists() for path, _ in SERVICES.values())
