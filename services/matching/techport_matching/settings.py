from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from techport_shared.settings import ConsumerSettings, KafkaSettings, OutboxSettings


class MatchingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MATCHING_", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///var/matching.db"
    migrate_on_start: bool = True
    consumer_group: str = "matching"
    identity_secret: SecretStr = Field(
        validation_alias=AliasChoices("TECHPORT_IDENTITY_SECRET", "identity_secret")
    )
    # The contract's names (section 2), without the service prefix.
    top_k_per_vacancy: int = Field(
        50, ge=1, validation_alias=AliasChoices("MATCH_TOP_K_PER_VACANCY", "top_k_per_vacancy")
    )
    top_k_per_student: int = Field(
        10, ge=1, validation_alias=AliasChoices("MATCH_TOP_K_PER_STUDENT", "top_k_per_student")
    )
    min_score: float = Field(0.5, ge=0, le=1, validation_alias=AliasChoices("MATCH_MIN_SCORE", "min_score"))
    partnership_min_matches: int = Field(
        3, ge=1, validation_alias=AliasChoices("PARTNERSHIP_MIN_MATCHES", "partnership_min_matches")
    )
    # Rebuild the index from the database when this share of its slots is superseded.
    reindex_stale_fraction: float = Field(0.5, gt=0, le=1)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
