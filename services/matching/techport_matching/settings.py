from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict
from techport_shared.settings import ServiceSettings


def _contract(name: str, field: str) -> AliasChoices:
    """The contract's environment names (section 2) carry no service prefix."""
    return AliasChoices(name, field)


class MatchingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MATCHING_", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///var/matching.db"
    consumer_group: str = "matching"
    top_k_per_vacancy: int = Field(
        50, ge=1, validation_alias=_contract("MATCH_TOP_K_PER_VACANCY", "top_k_per_vacancy")
    )
    top_k_per_student: int = Field(
        10, ge=1, validation_alias=_contract("MATCH_TOP_K_PER_STUDENT", "top_k_per_student")
    )
    min_score: float = Field(0.5, ge=0, le=1, validation_alias=_contract("MATCH_MIN_SCORE", "min_score"))
    partnership_min_matches: int = Field(
        3, ge=1, validation_alias=_contract("PARTNERSHIP_MIN_MATCHES", "partnership_min_matches")
    )
