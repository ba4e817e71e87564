from __future__ import annotations

import json
import uuid

import pytest
from techport_shared.envelope import Envelope, EnvelopeError, Origin, from_record, to_binary, to_structured

from tests.kafka_helpers import fresh_topic, header, produce, read_topic


def _event() -> Envelope:
    return Envelope(
        type="nl.techport.student.registered.v1",
        source="/partners/school-1",
        subject="stu-1",
        data={"student_id": "stu-1", "skills": ["TIG-lassen"]},
        correlationid="corr-1",
        causationid="cause-1",
    )


def test_binary_mode_headers_follow_the_contract() -> None:
    record = to_binary(_event())
    headers = record.str_headers()
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "nl.techport.student.registered.v1"
    assert headers["ce_source"] == "/partners/school-1"
    assert headers["ce_subject"] == "stu-1"
    assert headers["content-type"] == "application/json"
    assert headers["ce_correlationid"] == "corr-1"
    assert headers["ce_causationid"] == "cause-1"
    assert headers["ce_time"].endswith("Z")
    assert record.key == b"stu-1"
    assert json.loads(record.value) == {"student_id": "stu-1", "skills": ["TIG-lassen"]}


def test_caused_event_carries_correlation_and_names_its_cause() -> None:
    first = Envelope(type="t", source="/s", data={})
    second = Origin.of_event(first).event("t2", "/members", {"a": 1}, subject="x")
    third = Origin.of_event(second).event("t3", "/matching", {})
    assert second.correlationid == first.id and second.causationid == first.id
    assert third.correlationid == first.id and third.causationid == second.id


@pytest.mark.parametrize(
    ("value", "headers", "field"),
    [
        (
            b"not json",
            [("ce_type", b"x"), ("ce_source", b"/s"), ("ce_id", b"1"), ("ce_specversion", b"1.0")],
            "data",
        ),
        (b'{"a": 1}', [], "content-type"),
        (b"", [("ce_type", b"x")], "value"),
        (b'{"a": 1}', [("ce_source", b"/s"), ("ce_id", b"1"), ("ce_specversion", b"1.0")], "envelope"),
        (b"[1, 2]", [("content-type", b"application/cloudevents+json")], "envelope"),
        # A NUL in an id would fail every processed-messages insert on PostgreSQL: refused as unreadable.
        (
            b'{"a": 1}',
            [("ce_type", b"x"), ("ce_source", b"/s"), ("ce_id", b"1\x00"), ("ce_specversion", b"1.0")],
            "id",
        ),
        (
            b'{"a": 1}',
            [("ce_type", b"x"), ("ce_source", b"/s\r\nx"), ("ce_id", b"1"), ("ce_specversion", b"1.0")],
            "source",
        ),
    ],
)
def test_unreadable_records_name_the_problem(value: bytes, headers: list, field: str) -> None:
    with pytest.raises(EnvelopeError) as raised:
        from_record(None, value, headers)
    assert raised.value.field == field


@pytest.mark.kafka
async def test_round_trip_over_the_broker_in_binary_and_structured_mode(kafka_topics) -> None:
    bootstrap = kafka_topics.kafka_bootstrap_servers
    topic = await fresh_topic(kafka_topics, "test.envelope")
    binary = _event()
    structured = Envelope(
        type="nl.techport.vacancy.posted.v1",
        source="/partners/company-1",
        subject=f"vac-{uuid.uuid4().hex[:6]}",
        data={"vacancy_id": "v1", "title": "Monteur windturbines"},
        correlationid="corr-2",
    )
    await produce(bootstrap, topic, to_binary(binary), to_structured(structured))
    records = await read_topic(bootstrap, topic, until=lambda found: len(found) >= 2)
    by_mode = {header(r, "content-type"): r for r in records}
    assert set(by_mode) == {"application/json", "application/cloudevents+json"}

    read_binary = from_record(*_parts(by_mode["application/json"]))
    assert (read_binary.id, read_binary.type, read_binary.source, read_binary.subject) == (
        binary.id,
        binary.type,
        binary.source,
        binary.subject,
    )
    assert read_binary.data == binary.data
    assert (read_binary.correlationid, read_binary.causationid) == ("corr-1", "cause-1")
    assert read_binary.time == binary.time.replace(microsecond=read_binary.time.microsecond)

    read_structured = from_record(*_parts(by_mode["application/cloudevents+json"]))
    assert read_structured.id == structured.id
    assert read_structured.data == structured.data
    assert read_structured.correlationid == "corr-2"
    assert by_mode["application/cloudevents+json"].key == structured.subject.encode()


def _parts(record) -> tuple:
    return record.key, record.value, record.headers


@pytest.mark.parametrize("text", ["Jan\x00", "\x1b[31mJan", "Jan\x7f"])
def test_text_with_control_characters_is_refused_with_the_field_named(text: str) -> None:
    from pydantic import ValidationError
    from techport_shared.events import OrganisationRegistered

    data = {
        "organisation_id": "org-1",
        "kind": "company",
        "name": text,
        "email": "info@org.example.nl",
        "postcode": "1971 AB",
        "city": "IJmuiden",
    }
    with pytest.raises(ValidationError) as raised:
        OrganisationRegistered.model_validate(data)
    [error] = raised.value.errors()
    assert error["loc"] == ("name",) and "control character" in error["msg"]
    assert OrganisationRegistered.model_validate(data | {"name": "Jan\tde Vries"}).name == "Jan\tde Vries"
