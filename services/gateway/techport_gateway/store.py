"""The gateway's database: organisation API keys, as hashes only."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel
from techport_shared.db import RowInit, utc_field


class GatewayTable(RowInit, SQLModel, registry=registry()):
    """Base of the gateway's tables: their own MetaData."""


class ApiKeyRow(GatewayTable, table=True):
    __tablename__ = "api_keys"
    key_id: str = Field(primary_key=True, max_length=16)
    organisation_id: str = Field(max_length=64, index=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = utc_field()
    revoked_at: datetime | None = utc_field(nullable=True)


metadata = GatewayTable.metadata


class KeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, key_id: str) -> ApiKeyRow | None:
        return await self.session.get(ApiKeyRow, key_id)

    def add(self, key_id: str, organisation_id: str, key_hash: str) -> None:
        self.session.add(
            ApiKeyRow(
                key_id=key_id,
                organisation_id=organisation_id,
                key_hash=key_hash,
                created_at=datetime.now(UTC),
            )
        )

    async def revoke(self, key_id: str) -> bool:
        row = await self.get(key_id)
        if row is None:
            return False
        row.revoked_at = row.revoked_at or datetime.now(UTC)
        self.session.add(row)
        return True
