"""Alembic for every service: one async-aware env, and `upgrade()` callable from async code.

A service's `migrations/env.py` is two lines: import its MetaData and call `run_env(metadata)`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import Column, DateTime, MetaData, text
from sqlalchemy.engine import Connection

from techport_shared.db import async_url, create_engine, is_sqlite, sqlite_file_lock
from techport_shared.messaging import messaging_tables


def alembic_config(script_location: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # Alembic's config is an ini parser: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return config


def create_messaging_tables() -> None:
    """In a service's first migration: the outbox and processed-messages tables (`messaging.py`), from their
    one definition, as version 1 had them; each later version comes with a migration in every service."""
    metadata = MetaData()
    messaging_tables(metadata, version=1)
    metadata.create_all(op.get_bind())


def drop_messaging_tables() -> None:
    metadata = MetaData()
    messaging_tables(metadata, version=1)
    metadata.drop_all(op.get_bind())


def upgrade_messaging_tables_to_v2() -> None:
    """Version 2: an outbox event the broker refuses for good is parked (`parked_at`), not retried forever."""
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(Column("parked_at", DateTime(timezone=True), nullable=True))
        batch.create_index("ix_outbox_parked", ["parked_at"])


def downgrade_messaging_tables_from_v2() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_parked")
        batch.drop_column("parked_at")


def run_env(target_metadata: MetaData) -> None:
    """The body of a service's env.py."""
    config = context.config
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "render_as_batch": True,  # SQLite alters tables by copy; batch mode makes one migration serve both
        "compare_type": True,
    }
    connection: Connection | None = config.attributes.get("connection")
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
    elif connection is not None:
        _run(connection, options)
    else:
        asyncio.run(_run_async(config.get_main_option("sqlalchemy.url") or "", options))


def _run(connection: Connection, options: dict[str, Any]) -> None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str, options: dict[str, Any]) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run, options)
            await connection.commit()
    finally:
        await engine.dispose()


async def upgrade(script_location: Path, url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision`, from inside a running event loop.

    Processes starting together (replicas, init containers) migrate one at a time: PostgreSQL through an
    advisory lock held for the transaction, SQLite through a lock file beside the database (SQLite runs DDL
    outside transactions, so its own locking cannot order two migrations).
    """
    config = alembic_config(script_location, url)
    async with sqlite_file_lock(url, "migrate"):
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                if not is_sqlite(url):
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext('techport-migrations'))")
                    )

                def _upgrade(sync_connection: Connection) -> None:
                    config.attributes["connection"] = sync_connection
                    command.upgrade(config, revision)

                await connection.run_sync(_upgrade)
        finally:
            await engine.dispose()
