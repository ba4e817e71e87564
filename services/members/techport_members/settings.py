from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from techport_shared.settings import ConsumerSettings, KafkaSettings, OutboxSettings


class MembersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMBERS_", extra="ignore")

    database_url: str = "sqlite:///var/members.db"
    migrate_on_start: bool = True
    ingress_group: str = "members-ingress"
    # Shared with the gateway, which signs the caller's identity with it.
    identity_secret: SecretStr = Field(
        validation_alias=AliasChoices("TECHPORT_IDENTITY_SECRET", "identity_secret")
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
