from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///var/gateway.db"
    migrate_on_start: bool = True
    operator_key: SecretStr = Field(validation_alias=AliasChoices("TECHPORT_OPERATOR_KEY", "operator_key"))
    identity_secret: SecretStr = Field(
        validation_alias=AliasChoices("TECHPORT_IDENTITY_SECRET", "identity_secret")
    )
    identity_ttl_s: int = Field(60, ge=5)
    members_url: str = Field(
        "http://127.0.0.1:8101", validation_alias=AliasChoices("MEMBERS_URL", "members_url")
    )
    matching_url: str = Field(
        "http://127.0.0.1:8102", validation_alias=AliasChoices("MATCHING_URL", "matching_url")
    )
    notifications_url: str = Field(
        "http://127.0.0.1:8103", validation_alias=AliasChoices("NOTIFICATIONS_URL", "notifications_url")
    )
    # Per key; the `limits` notation, several allowed: "20/second;600/minute".
    rate_limit: str = "20/second;600/minute"
    upstream_timeout_s: float = Field(10.0, gt=0)
    # How long a looked-up key is trusted before it is read again: a revoked key stops within this.
    key_cache_s: float = Field(5.0, ge=0)
