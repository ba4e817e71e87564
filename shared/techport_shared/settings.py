"""Settings every service shares, read from the environment (pydantic-settings)."""

from __future__ import annotations

import ssl
from typing import Any, Literal

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Where the broker is and how our topics are laid out."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of the Kafka brokers."
    )
    # Partitions per topic: a default and per-topic overrides, e.g.
    # TOPIC_PARTITIONS='{"techport.students.v1": 12}'.
    topic_partitions_default: int = Field(default=6, ge=1)
    topic_partitions: dict[str, int] = Field(default_factory=dict)
    topic_replication_factor: int = Field(default=1, ge=1)
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    # How clients authenticate: PLAINTEXT locally; in Kubernetes SASL_SSL with SCRAM-SHA-512 (Strimzi's
    # KafkaUser), the cluster CA from Strimzi's secret.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = Field(
        default="", description="CA bundle to verify the brokers (PEM); blank: system CAs"
    )
    kafka_request_timeout_ms: int = Field(
        default=15_000, ge=1_000, description="How long a publish may wait for the broker before it fails."
    )
    kafka_metadata_max_age_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="How often clients refresh metadata: a new partner's ingress topic is read within this.",
    )

    def security(self) -> BaseSecurity | None:
        """FastStream's security object for these settings (None for PLAINTEXT)."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return None
        tls = protocol.endswith("SSL")
        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None) if tls else None
        if protocol == "SSL":
            return BaseSecurity(ssl_context=context, use_ssl=True)
        if not self.kafka_sasl_username:
            raise ValueError(f"KAFKA_SASL_USERNAME is required with {protocol}")
        kind = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}
        return kind[self.kafka_sasl_mechanism](
            self.kafka_sasl_username,
            self.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=tls,
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for a plain aiokafka client (producer, consumer, admin) with these settings."""
        return {"bootstrap_servers": self.kafka_bootstrap_servers, **parse_security(self.security())}


class ConsumerSettings(BaseSettings):
    """How a consumer retries before it dead-letters a record."""

    model_config = SettingsConfigDict(env_prefix="CONSUMER_", extra="ignore")

    max_attempts: int = Field(default=4, ge=1, description="Attempts of a failing handler before the DLQ.")
    backoff_initial_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    batch_size: int = Field(default=200, ge=1, description="Records handled in one transaction at most.")
    batch_wait_ms: int = Field(default=50, ge=1, description="How long a poll waits for a batch to fill.")
    # The broker answers a fetch once it has this much or this long has passed. Gathering (64 KiB or 30 ms)
    # made bigger batches at a steady rate and lowered the pipeline benchmark's p99, but in two suite runs out
    # of three aiokafka's fetch and coordination tasks then ended on an assertion while a pattern
    # subscription changed (aio-libs/aiokafka#796): the minimum stays aiokafka's 1 byte.
    fetch_min_bytes: int = Field(default=1, ge=1, description="What a fetch waits for at the broker.")
    # aiokafka keeps one fetch per broker in flight and leaves out the partitions whose records are still
    # buffered; a fetch for the quiet rest (another topic, other partitions) then holds back the next records
    # of those partitions until it returns. With aiokafka's 500 ms, matching sat idle for 0.4 s at times in
    # the pipeline benchmark's steady 200 events/s (3 of 10 runs had a p99 of 635-771 ms to match.found);
    # with 100 ms no such pause was seen. Members' subscription to the partner topics by pattern had kept
    # 500 ms (aio-libs/aiokafka#796, whose ended tasks the runtime now starts again): its stage of that
    # benchmark took a p50 of 570 ms, against 132 ms with 100 ms.
    fetch_max_wait_ms: int = Field(default=100, ge=1, description="How long a fetch waits at most.")
    pattern_fetch_max_wait_ms: int = Field(
        default=100, ge=1, description="How long a fetch of a pattern subscription waits at most."
    )


class OutboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTBOX_", extra="ignore")

    poll_interval_s: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=500, ge=1)
    backoff_max_s: float = Field(default=5.0, gt=0)
    # A record larger than this is refused by the producer and the broker (both 1 MiB by default): parked.
    max_record_bytes: int = Field(default=1_000_000, ge=1024)


class ServiceSettings(BaseSettings):
    """What every service reads; a service's subclass sets its env prefix (MEMBERS_, ...) and defaults."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str
    migrate_on_start: bool = True
    consumer_group: str
    # Shared with the gateway, which signs the caller's identity with it.
    identity_secret: SecretStr = Field(
        validation_alias=AliasChoices("TECHPORT_IDENTITY_SECRET", "identity_secret")
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)


def environment_names(settings: type[BaseSettings]) -> dict[str, bool]:
    """Every environment variable `settings` reads, with whether it is required (no default).

    Deployment checks use it: each name must be set by the manifests and by compose. A field with aliases
    is read under its first alias; nested settings (KafkaSettings, ...) bring their own prefix.
    """
    names: dict[str, bool] = {}
    prefix = settings.model_config.get("env_prefix", "") or ""
    for field_name, info in settings.model_fields.items():
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseSettings):
            names.update(environment_names(nested))
            continue
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            name = str(alias.choices[0])
        elif isinstance(alias, str):
            name = alias
        else:
            name = f"{prefix}{field_name}"
        names[name.upper()] = info.is_required()
    return names
