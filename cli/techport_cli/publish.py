"""`techport publish`: put a CloudEvent from a JSON file on a topic (the partner ingress by default), as a
partner system would."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from techport_shared.envelope import Envelope, to_binary, to_structured
from techport_shared.kafka import plain_producer
from techport_shared.settings import KafkaSettings
from techport_shared.topics import partner_topics

from techport_cli.topics import read_topic


def envelope_from_json(document: dict[str, Any]) -> Envelope:
    """A CloudEvent in its JSON form (specversion, id, source, type, subject, data, extensions)."""
    missing = [name for name in ("type", "source", "data") if name not in document]
    if missing:
        raise SystemExit(f"the event needs {', '.join(missing)}")
    core = {"specversion", "id", "source", "type", "subject", "time", "data", "datacontenttype"}
    extensions = {k: str(v) for k, v in document.items() if k not in core}
    time = document.get("time")
    return Envelope(
        type=document["type"],
        source=document["source"],
        data=document["data"],
        subject=document.get("subject"),
        id=str(document.get("id") or uuid.uuid4()),
        **({"time": datetime.fromisoformat(time.replace("Z", "+00:00"))} if time else {}),
        correlationid=extensions.pop("correlationid", None),
        causationid=extensions.pop("causationid", None),
        extensions=extensions,
    )


async def publish_file(
    document: dict[str, Any], topic: str | None, kafka: KafkaSettings, structured: bool
) -> tuple[Envelope, str]:
    envelope = envelope_from_json(document)
    partner = None  # the partner whose ingress topic it goes to, when no topic is named
    if topic is None:
        partner = envelope.source.removeprefix("/partners/")
        if partner == envelope.source:
            raise SystemExit("the source is not /partners/<organisation id>: name the topic with --topic")
        topic = partner_topics(partner).ingress
    record = to_structured(envelope) if structured else to_binary(envelope)
    producer = plain_producer(kafka)
    await producer.start()
    try:
        # Asked first: a send to a topic that does not exist waits out the metadata timeout, then fails with
        # aiokafka's UnknownTopicOrPartitionError, which tells a partner's developer nothing of why.
        if topic not in (await producer.client.fetch_all_metadata()).topics():
            raise SystemExit(_no_topic(topic, partner))
        await producer.send_and_wait(topic, record.value, key=record.key, headers=record.header_list())
    finally:
        await producer.stop()
    return envelope, topic


def _no_topic(topic: str, partner: str | None) -> str:
    if partner is None:
        return f"there is no topic {topic} on the broker"
    return (
        f"there is no topic {topic}: {partner} is not a registered partner (its topics are made when an "
        "operator registers the organisation, POST /api/v1/organisations)"
    )


async def read_rejections(kafka: KafkaSettings, partner: str, wait_s: float) -> list[dict[str, Any]]:
    """The `ingress.rejected` events on the partner's own rejected topic."""
    from techport_shared.envelope import from_record

    records = await read_topic(kafka, partner_topics(partner).rejected, wait_s)
    return [from_record(r.key, r.value, r.headers).data for r in records]
