from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from techport_shared.settings import ServiceSettings


class SmtpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMTP_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 1025
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    use_tls: bool = False
    timeout_s: float = 10.0
    sender: str = "Techport IJmond <noreply@techport.nl>"


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///var/notifications.db"
    consumer_group: str = "notifications"
    digest_seconds: float = Field(
        60, ge=0, validation_alias=AliasChoices("NOTIFY_DIGEST_SECONDS", "digest_seconds")
    )
    # Signs unsubscribe tokens; it must stay the same across restarts and replicas.
    unsubscribe_secret: SecretStr = Field(
        validation_alias=AliasChoices(
            "NOTIFY_UNSUBSCRIBE_SECRET", "TECHPORT_IDENTITY_SECRET", "unsubscribe_secret"
        )
    )
    public_url: str = Field(
        "http://127.0.0.1:8000/api/v1", validation_alias=AliasChoices("TECHPORT_PUBLIC_URL", "public_url")
    )
    # Where emails link to (the portal's pages of a match, a candidate, a partnership).
    portal_url: str = Field(
        "http://127.0.0.1:8000/portal", validation_alias=AliasChoices("TECHPORT_PORTAL_URL", "portal_url")
    )
    # Members, which holds the keys of students' sealed fields (only reached inside the platform).
    members_url: str = Field(
        "http://127.0.0.1:8101", validation_alias=AliasChoices("MEMBERS_URL", "members_url")
    )
    send_attempts: int = Field(5, ge=1, description="SMTP attempts before notification.failed")
    backoff_initial_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    poll_interval_s: float = Field(1.0, gt=0)
    # How long a claimed send is left to its sender; only after that may another replica send it again.
    sending_claim_s: float = Field(600.0, gt=0)
    # How many due notifications one pass claims, and how many of them are sent at once.
    send_batch: int = Field(50, ge=1)
    send_concurrency: int = Field(4, ge=1)
    # Emails a second, at most, per replica: mail providers limit senders (and a cohort's emails would take
    # a replica's whole CPU). 0: as fast as the SMTP server takes them.
    send_rate: float = Field(50.0, ge=0)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
