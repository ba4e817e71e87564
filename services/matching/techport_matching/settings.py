from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
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
    # Keys match ids: the reference a company sees for a candidate cannot be derived from a student id.
    # Every replica must have the same one.
    reference_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("MATCHING_REFERENCE_SECRET", "reference_secret")
    )
    # Members, which holds the keys of students' sealed fields (only reached inside the platform).
    members_url: str = Field(
        "http://127.0.0.1:8101", validation_alias=AliasChoices("MEMBERS_URL", "members_url")
    )
    # Stored but not matched after this long (a replica stopped between the two): matched by whoever sees it.
    pending_after_s: float = Field(60.0, gt=0)

    def reference_key(self) -> bytes:
        secret = self.reference_secret or self.identity_secret
        return secret.get_secret_value().encode()
