"""The tables every service keeps for reliable messaging (Eventuate Tram's shape):

- `outbox`: events written in the same transaction as the state change; the relay publishes them after commit
  and deletes them (version 2 added `parked_at`: an event the broker refuses for good waits there).
- `processed_messages`: (consumer, ce_source, ce_id) of every event a consumer has handled, written in the
  handler's transaction, so a redelivered event has effect once.

They attach to the service's own MetaData, so each service's Alembic migrations create them in its database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for a long-lived outbox.
_Id = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    processed: Table


def messaging_tables(metadata: MetaData, version: int = 2) -> MessagingTables:
    """The tables as they are now, or as they were at `version` (what a service's first migration made)."""
    parked = (
        [Column("parked_at", DateTime(timezone=True), nullable=True), Index("ix_outbox_parked", "parked_at")]
        if version >= 2
        else []
    )
    outbox = Table(
        "outbox",
        metadata,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("topic", String(200), nullable=False),
        Column("message_key", String(200), nullable=True),
        Column("ce_id", String(200), nullable=False),
        Column("ce_type", String(200), nullable=False),
        Column("headers", JSON, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
        Index("ix_outbox_unpublished", "published_at", "id"),
        # `parked_at`: set when the broker refused the event for good (too large, invalid); it waits there.
        *parked,
    )
    processed = Table(
        "processed_messages",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("ce_source", String(300), nullable=False),
        Column("ce_id", String(200), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("consumer", "ce_source", "ce_id", name="pk_processed_messages"),
    )
    return MessagingTables(outbox=outbox, processed=processed)
