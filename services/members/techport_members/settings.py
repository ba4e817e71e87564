from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from techport_shared.settings import ServiceSettings


class MembersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MEMBERS_", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///var/members.db"
    consumer_group: str = "members-ingress"
    # Handled partner records are deleted from their topics this long after their offsets were committed.
    delete_handled_after_s: float = Field(2.0, ge=0)
