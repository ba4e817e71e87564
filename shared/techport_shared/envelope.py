"""The CloudEvents 1.0 envelope over Kafka (contract section 1), built on the `cloudevents` SDK.

We produce binary content mode (attributes in `ce_*` headers, the `data` object as the record value) and read
both binary and structured mode. `correlationid` and `causationid` are extension attributes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

JSON = "application/json"
CLOUDEVENTS_JSON = "application/cloudevents+json"
_FORMAT = JSONFormat()
# Attributes of the envelope itself; everything else in the headers is an extension or transport detail.
_CORE = {"id", "source", "type", "specversion", "time", "subject", "datacontenttype", "partitionkey"}


class EnvelopeError(ValueError):
    """A record that is not a readable CloudEvent. `field` names what is wrong, for rejections and the DLQ."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Envelope:
    """One event: its CloudEvents attributes and its `data` as plain JSON values."""

    type: str
    source: str
    data: dict[str, Any]
    subject: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    correlationid: str | None = None
    causationid: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)

    def caused(self, type: str, source: str, data: dict[str, Any], subject: str | None = None) -> Envelope:
        """A new event caused by this one: it carries this correlation id and names this event as cause."""
        return Envelope(
            type=type,
            source=source,
            data=data,
            subject=subject,
            correlationid=self.correlationid or self.id,
            causationid=self.id,
        )

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": "1.0",
            "time": self.time,
            "datacontenttype": JSON,
            **self.extensions,
        }
        if self.subject is not None:
            attributes["subject"] = self.subject
        if self.correlationid is not None:
            attributes["correlationid"] = self.correlationid
        if self.causationid is not None:
            attributes["causationid"] = self.causationid
        return attributes


@dataclass(frozen=True)
class KafkaRecord:
    """What goes on the wire: key, value and headers (header values as bytes, as Kafka has them)."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def header_list(self) -> list[tuple[str, bytes]]:
        return list(self.headers.items())

    def str_headers(self) -> dict[str, str]:
        return {k: v.decode("utf-8", "replace") for k, v in self.headers.items()}


def to_binary(envelope: Envelope) -> KafkaRecord:
    """Binary content mode, keyed by the subject (so one entity's events stay in order)."""
    event = CloudEvent(attributes=envelope.attributes(), data=envelope.data)
    message = ce_kafka.to_binary(event, _FORMAT, key_mapper=lambda _: envelope.subject)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return KafkaRecord(key=key, value=message.value, headers=dict(message.headers))


def to_structured(envelope: Envelope) -> KafkaRecord:
    """Structured content mode: how some partner systems send; we accept it on ingress."""
    event = CloudEvent(attributes=envelope.attributes(), data=envelope.data)
    message = ce_kafka.to_structured(event, _FORMAT, key_mapper=lambda _: envelope.subject)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return KafkaRecord(key=key, value=message.value, headers=dict(message.headers))


def _decode_headers(headers: Any) -> dict[str, bytes]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, dict) else headers
    decoded: dict[str, bytes] = {}
    for name, value in items:
        if value is None:
            continue
        decoded[str(name)] = value if isinstance(value, bytes) else str(value).encode()
    return decoded


def from_record(key: bytes | None, value: bytes | None, headers: Any) -> Envelope:
    """Read a record in binary or structured mode. Raises EnvelopeError naming the first problem."""
    header_map = _decode_headers(headers)
    if not value:
        raise EnvelopeError("value", "the record has no value")
    content_type = header_map.get("content-type", b"").decode("utf-8", "replace").lower()
    is_binary = any(name.lower().startswith("ce_") for name in header_map)
    if not is_binary and not content_type.startswith(CLOUDEVENTS_JSON):
        raise EnvelopeError(
            "content-type",
            "neither binary mode (ce_* headers) nor structured mode (application/cloudevents+json)",
        )
    try:
        json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError("data" if is_binary else "value", f"not valid JSON: {exc}") from None
    message = ce_kafka.KafkaMessage(headers=header_map, key=key, value=value)
    try:
        event = ce_kafka.from_kafka(message, _FORMAT)
    except BaseCloudEventException as exc:
        raise EnvelopeError("envelope", str(exc)) from None
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EnvelopeError("envelope", f"not a CloudEvent: {exc}") from None
    return _envelope_of(event)


def _envelope_of(event: Any) -> Envelope:
    attributes = event.get_attributes()
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            raise EnvelopeError("data", "not valid JSON") from None
    if not isinstance(data, dict):
        raise EnvelopeError("data", "must be a JSON object")
    time = attributes.get("time")
    if not isinstance(time, datetime):
        time = datetime.now(UTC)
    extensions = {k: str(v) for k, v in attributes.items() if k not in _CORE}
    return Envelope(
        type=str(attributes["type"]),
        source=str(attributes["source"]),
        id=str(attributes["id"]),
        subject=attributes.get("subject"),
        time=time,
        data=data,
        correlationid=extensions.pop("correlationid", None),
        causationid=extensions.pop("causationid", None),
        extensions=extensions,
    )
