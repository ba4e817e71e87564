"""The CloudEvents 1.0 envelope over Kafka (contract section 1), built on the `cloudevents` SDK.

We produce binary content mode (attributes in `ce_*` headers, the `data` object as the record value) and read
both binary and structured mode, on Kafka and over HTTP (binary `ce-*` headers, structured, and batches).
`correlationid` and `causationid` are extension attributes. Input is bounded before it is parsed
(`limits.check_json`): size, nesting depth, and the length of every attribute.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from techport_shared.limits import (
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_HEADERS_BYTES,
    InputTooLarge,
    check_json,
    has_control,
)

JSON = "application/json"
CLOUDEVENTS_JSON = "application/cloudevents+json"
CLOUDEVENTS_BATCH_JSON = "application/cloudevents-batch+json"
_FORMAT = JSONFormat()
# Attributes of the envelope itself; everything else in the headers is an extension or transport detail.
_CORE = {"id", "source", "type", "specversion", "time", "subject", "datacontenttype", "partitionkey"}
# Bounds of the attributes we keep (they key the processed-messages table and go back out in rejections).
ATTRIBUTE_LIMITS = {"id": 200, "source": 300, "type": 200, "subject": 200}
_EXTENSION_LIMIT = 200
_MAX_EXTENSIONS = 16


class EnvelopeError(ValueError):
    """A record that is not a readable CloudEvent. `field` names what is wrong, for rejections and the DLQ."""

    def __init__(self, field: str, message: str, too_large: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.too_large = too_large  # over the size bound (HTTP answers 413), rather than malformed


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
class Origin:
    """Where a change comes from: an event or a request. Every event it causes carries its correlation id
    (so a partner's event can be followed to the last email it caused) and names it as the cause."""

    correlation_id: str | None
    causation_id: str | None
    occurred_at: datetime
    channel: str  # "api", "ingress" (a partner's event), "event" (another service's)

    @classmethod
    def of_event(cls, event: Envelope, channel: str = "event") -> Origin:
        return cls(event.correlationid or event.id, event.id, event.time, channel)

    @classmethod
    def of_request(cls, request_id: str) -> Origin:
        return cls(request_id, None, datetime.now(UTC), "api")

    def event(self, type: str, source: str, data: dict[str, Any], subject: str | None = None) -> Envelope:
        """A new event caused by this origin."""
        return Envelope(
            type=type,
            source=source,
            data=data,
            subject=subject,
            correlationid=self.correlation_id,
            causationid=self.causation_id,
        )


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


def _checked_json(raw: bytes, field: str, max_bytes: int = MAX_EVENT_BYTES) -> Any:
    """Parse JSON that was first checked against the bounds (size, depth) and is UTF-8."""
    try:
        check_json(raw, field, max_bytes)
    except InputTooLarge as exc:
        raise EnvelopeError(exc.field, exc.message, too_large=len(raw) > max_bytes) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(field, f"not valid JSON: {_short(exc)}") from None


def _short(exc: Exception) -> str:
    return str(exc)[:200]


def from_record(key: bytes | None, value: bytes | None, headers: Any) -> Envelope:
    """Read a record in binary or structured mode. Raises EnvelopeError naming the first problem."""
    header_map = _decode_headers(headers)
    if not value:
        raise EnvelopeError("value", "the record has no value")
    header_bytes = sum(len(k) + len(v) for k, v in header_map.items())
    if header_bytes > MAX_HEADERS_BYTES:
        raise EnvelopeError("headers", f"are {header_bytes} bytes; at most {MAX_HEADERS_BYTES} are accepted")
    content_type = header_map.get("content-type", b"").decode("utf-8", "replace").lower()
    is_binary = any(name.lower().startswith("ce_") for name in header_map)
    if not is_binary and not content_type.startswith(CLOUDEVENTS_JSON):
        raise EnvelopeError(
            "content-type",
            "neither binary mode (ce_* headers) nor structured mode (application/cloudevents+json)",
        )
    parsed = _checked_json(value, "data" if is_binary else "value")
    if is_binary:
        return _binary_envelope(header_map, parsed)
    message = ce_kafka.KafkaMessage(headers=header_map, key=key, value=value)
    try:
        event = ce_kafka.from_kafka(message, _FORMAT)
    except BaseCloudEventException as exc:
        raise EnvelopeError("envelope", _short(exc)) from None
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EnvelopeError("envelope", f"not a CloudEvent: {_short(exc)}") from None
    return _envelope_of(event)


def _binary_envelope(headers: dict[str, bytes], data: Any) -> Envelope:
    """Binary mode read directly: the value was parsed once already (the SDK would parse it again)."""
    attributes: dict[str, Any] = {}
    for name, raw in headers.items():
        if name.startswith("ce_"):
            try:
                attributes[name[3:]] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise EnvelopeError(name, "is not UTF-8") from None
    if attributes.get("specversion") != "1.0":
        raise EnvelopeError("envelope", "ce_specversion must be 1.0")
    for required in ("id", "source", "type"):
        if not attributes.get(required):
            raise EnvelopeError("envelope", f"ce_{required} is required")
    if "time" in attributes:
        try:
            attributes["time"] = datetime.fromisoformat(attributes["time"])
        except ValueError:
            raise EnvelopeError("ce_time", "is not an RFC 3339 time") from None
    return _envelope_from(attributes, data)


def from_http(headers: dict[str, str], body: bytes) -> list[Envelope | EnvelopeError]:
    """Read the CloudEvents HTTP binding: binary mode (`ce-*` headers, the body is `data`), structured mode
    (`application/cloudevents+json`) or a batch (`application/cloudevents-batch+json`, a JSON array of
    structured events, at most MAX_BATCH_EVENTS). One entry per event: the envelope, or what is wrong with it,
    so that one bad event in a batch does not refuse the others. Raises EnvelopeError when the message as a
    whole cannot be read (not JSON, too large, not an array)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if content_type == CLOUDEVENTS_BATCH_JSON:
        items = _checked_json(body, "body", MAX_BATCH_BYTES)
        if not isinstance(items, list):
            raise EnvelopeError("body", "a batch is a JSON array of CloudEvents")
        if len(items) > MAX_BATCH_EVENTS:
            raise EnvelopeError("body", f"{len(items)} events; a batch holds at most {MAX_BATCH_EVENTS}")
        return [_structured_item(item) for item in items]
    _checked_json(body, "body")
    message = ce_http.HTTPMessage(headers=lowered, body=body)
    try:
        if content_type == CLOUDEVENTS_JSON:
            event = ce_http.from_structured(message, _FORMAT, CloudEvent)
        elif any(name.startswith("ce-") for name in lowered):
            event = ce_http.from_binary(message, _FORMAT, CloudEvent)
        else:
            raise EnvelopeError(
                "content-type",
                f"neither binary mode (ce-* headers) nor {CLOUDEVENTS_JSON} nor {CLOUDEVENTS_BATCH_JSON}",
            )
        return [_envelope_of(event)]
    except EnvelopeError as exc:
        return [exc]
    except BaseCloudEventException as exc:
        return [EnvelopeError("envelope", _short(exc))]
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        return [EnvelopeError("envelope", f"not a CloudEvent: {_short(exc)}")]


def _structured_item(item: Any) -> Envelope | EnvelopeError:
    if not isinstance(item, dict):
        return EnvelopeError("event", "each event of a batch is a JSON object")
    raw = json.dumps(item).encode()
    if len(raw) > MAX_EVENT_BYTES:
        return EnvelopeError("event", f"is {len(raw)} bytes; at most {MAX_EVENT_BYTES} are accepted")
    try:
        return _envelope_of(_FORMAT.read(CloudEvent, raw))
    except EnvelopeError as exc:
        return exc
    except BaseCloudEventException as exc:
        return EnvelopeError("envelope", _short(exc))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        return EnvelopeError("envelope", f"not a CloudEvent: {_short(exc)}")


def _envelope_of(event: Any) -> Envelope:
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            raise EnvelopeError("data", "not valid JSON") from None
    return _envelope_from(event.get_attributes(), data)


def _envelope_from(attributes: dict[str, Any], data: Any) -> Envelope:
    if not isinstance(data, dict):
        raise EnvelopeError("data", "must be a JSON object")
    for name, limit in ATTRIBUTE_LIMITS.items():
        value = attributes.get(name)
        if value is not None and len(str(value)) > limit:
            raise EnvelopeError(name, f"is longer than {limit} characters")
    for name, value in attributes.items():
        # An id or source is a key in every processed-messages table; a NUL in it would fail the database.
        if isinstance(value, str) and has_control(value, allow_whitespace=False):
            raise EnvelopeError(name[:_EXTENSION_LIMIT], "contains a control character")
    time = attributes.get("time")
    if not isinstance(time, datetime):
        time = datetime.now(UTC)
    elif time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    extensions = {k: str(v)[:_EXTENSION_LIMIT] for k, v in attributes.items() if k not in _CORE}
    if len(extensions) > _MAX_EXTENSIONS:
        raise EnvelopeError(
            "extensions", f"{len(extensions)} extension attributes; at most {_MAX_EXTENSIONS}"
        )
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
