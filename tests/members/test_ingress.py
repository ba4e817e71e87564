"""Partner ingress over the real broker, on SQLite and PostgreSQL: each partner writes its own ingress topic
and reads its own rejected topic."""

from __future__ import annotations

import json

import pytest
from techport_shared.envelope import Envelope, KafkaRecord, to_binary
from techport_shared.events import ce_type
from techport_shared.identity import organisation
from techport_shared.topics import STUDENTS, VACANCIES, partner_topics

from tests.kafka_helpers import produce
from tests.members.conftest import partner_event, student_data, uid, vacancy_data


async def _stored(members, path: str):
    async def check():
        async with members.client() as client:
            response = await client.get(path)
            return response.json() if response.status_code == 200 else None

    return await members.wait(check)


async def test_partner_events_become_records_and_canonical_events_with_ids_carried_through(members) -> None:
    school, company = await members.setup_network()
    student_id, vacancy_id = uid("stu"), uid("vac")
    student_event = partner_event(
        school,
        "student.registered",
        student_data(student_id, school),
        student_id,
        correlationid="school-batch-7",
    )
    vacancy_event = partner_event(company, "vacancy.posted", vacancy_data(vacancy_id, company), vacancy_id)
    await members.publish(student_event)
    await members.publish(vacancy_event, structured=True)

    student = await _stored(members, f"/students/{student_id}")
    assert student["skills"] == ["weld.tig", "safety.vca.basic", "hyd.systems", "free:onderwaterlassen"]
    assert student["postcode"] == "1972 AB" and student["location"]["lat"] == pytest.approx(52.46, abs=0.05)
    vacancy = await _stored(members, f"/vacancies/{vacancy_id}")
    assert vacancy["required_skills"] == ["safety.gwo.bst", "safety.heights", "elec.troubleshooting"]
    assert vacancy["status"] == "open"

    [registered] = await members.events(STUDENTS.name, lambda e: e.causationid == student_event.id)
    assert registered.type == ce_type("student.registered")
    assert registered.correlationid == "school-batch-7"  # the partner's correlation id, carried through
    assert registered.source == "/members" and registered.subject == student_id
    # On the topic the student's personal fields are sealed; opened with its key they are what is stored.
    assert "given_name" not in registered.data and "email" not in registered.data
    assert await members.unsealed(registered) == student
    [posted] = await members.events(VACANCIES.name, lambda e: e.causationid == vacancy_event.id)
    assert posted.correlationid == vacancy_event.id  # no correlation id given: the partner event starts one
    assert posted.type == ce_type("vacancy.posted")


async def test_a_duplicate_delivery_changes_nothing_and_emits_nothing(members) -> None:
    school, _ = await members.setup_network()
    student_id = uid("stu")
    event = partner_event(school, "student.registered", student_data(student_id, school), student_id)
    await members.publish(event)
    await members.publish(event)
    await _stored(members, f"/students/{student_id}")
    # A resend with a new ce_id and the same data is an update that changes nothing: no event either.
    resend = partner_event(school, "student.registered", student_data(student_id, school), student_id)
    await members.publish(resend)
    changed = partner_event(
        school, "student.registered", student_data(student_id, school, programme="Mechatronica"), student_id
    )
    await members.publish(changed)
    emitted = await members.events(STUDENTS.name, lambda e: e.subject == student_id, count=2, settle_s=2.0)
    assert [e.type for e in emitted] == [ce_type("student.registered"), ce_type("student.updated")]
    assert [e.causationid for e in emitted] == [event.id, changed.id]


def _bad_inputs(
    school: str, other_school: str, company: str, other_company: str
) -> list[tuple[str, object, str, str]]:
    """(name, event or raw record, the field its rejection must name, the partner whose topic it is on)."""
    sid, vid = "stu-bad", "vac-bad"
    good_student = student_data(sid, school)
    good_vacancy = vacancy_data(vid, company)

    def student(**changes):
        return partner_event(school, "student.registered", good_student | changes, sid)

    def vacancy(**changes):
        return partner_event(company, "vacancy.posted", good_vacancy | changes, vid)

    headers = to_binary(student()).headers
    cases: list[tuple[str, object, str]] = [
        (
            "not JSON",
            KafkaRecord(b"stu-bad", b"{this is not json", dict(headers) | {"ce_id": uid("raw").encode()}),
            "data",
        ),
        ("unknown type", partner_event(school, "spaceship.launched", {"x": 1}, sid), "ce_type"),
        (
            "wrong source",
            partner_event("nobody-registered-this", "student.registered", good_student, sid),
            "ce_source",
        ),
        (
            "source not a partner path",
            Envelope(type=ce_type("student.registered"), source="/hackers", data=good_student),
            "ce_source",
        ),
        (
            "another partner's source",
            partner_event(other_school, "student.registered", student_data(sid, other_school), sid),
            "ce_source",
        ),
        ("another school's student", student(school_id=other_school), "data.school_id"),
        ("a company posting for another", vacancy(organisation_id=other_company), "data.organisation_id"),
        ("unknown school", student(school_id="no-such-school"), "data.school_id"),
        (
            "school is a company",
            partner_event(company, "student.registered", good_student | {"school_id": company}, sid),
            "data.school_id",
        ),
        ("bad postcode", student(postcode="12345"), "data.postcode"),
        ("unknown postcode", student(postcode="1000 AA"), "data.postcode"),
        ("empty seeking", student(seeking=[]), "data.seeking"),
        ("bad level", student(level="mbo-7"), "data.level"),
        ("bad email", student(email="not-an-email"), "data.email"),
        (
            "missing title",
            partner_event(
                company, "vacancy.posted", {k: v for k, v in good_vacancy.items() if k != "title"}, vid
            ),
            "data.title",
        ),
        ("negative positions", vacancy(positions=-2), "data.positions"),
        ("a date that is not a date", vacancy(starts_on="next tuesday"), "data.starts_on"),
        ("hours not a number", vacancy(hours_per_week="veel"), "data.hours_per_week"),
        (
            "bad kvk",
            partner_event(
                company,
                "organisation.registered",
                {
                    "organisation_id": company,
                    "kind": "company",
                    "name": "X",
                    "email": "a@b.nl",
                    "postcode": "1971AB",
                    "city": "IJmuiden",
                    "kvk_number": "12",
                },
                company,
            ),
            "data.kvk_number",
        ),
        (
            "bad BRIN",
            partner_event(
                school,
                "organisation.registered",
                {
                    "organisation_id": school,
                    "kind": "school",
                    "name": "X",
                    "email": "a@b.nl",
                    "postcode": "1971AB",
                    "city": "IJmuiden",
                    "brin_code": "TOOLONG",
                },
                school,
            ),
            "data.brin_code",
        ),
        (
            "update of an unknown student",
            partner_event(school, "student.updated", student_data("stu-never", school), "stu-never"),
            "data.student_id",
        ),
    ]
    # Each goes on the topic of the partner that sends it: the company's on the company's, the rest on the
    # school's (whatever source the event claims).
    return [
        (
            name,
            item,
            field,
            company if isinstance(item, Envelope) and item.source == f"/partners/{company}" else school,
        )
        for name, item, field in cases
    ]


async def test_bad_inputs_are_rejected_with_every_error_and_nothing_is_stored(members) -> None:
    school, company = await members.setup_network()
    other_school, other_company = await members.setup_network()
    cases = _bad_inputs(school, other_school, company, other_company)
    assert len(cases) >= 12
    ids = []
    for _name, item, _field, partner in cases:
        if isinstance(item, KafkaRecord):
            await produce(members.bootstrap, partner_topics(partner).ingress, item)
            ids.append(item.headers["ce_id"].decode())
        else:
            await members.publish(item, as_partner=partner)
            ids.append(item.id)
    by_id = {}
    for partner in (school, company):
        sent = [event_id for (*_, sender), event_id in zip(cases, ids, strict=True) if sender == partner]
        for rejection in await members.rejections(partner, sent, settle_s=1.0):
            by_id[rejection.data["ce_id"]] = rejection
    missing = [
        name for (name, _item, _field, _p), event_id in zip(cases, ids, strict=True) if event_id not in by_id
    ]
    assert not missing, f"not rejected: {missing}"
    for (name, _item, field, _p), event_id in zip(cases, ids, strict=True):
        fields = [error["field"] for error in by_id[event_id].data["errors"]]
        assert field in fields, f"{name}: rejection names {fields}, not {field}"
    # Every error is reported, not only the first.
    several = partner_event(
        school, "student.registered", student_data("stu-x", school, level="x", seeking=[], email="y"), "x"
    )
    await members.publish(several)
    [rejection] = await members.rejections(school, [several.id])
    assert {"data.level", "data.seeking", "data.email"} <= {e["field"] for e in rejection.data["errors"]}
    assert rejection.subject == school  # keyed by the partner's organisation id

    async with members.client() as client:
        assert (await client.get("/students/stu-bad")).status_code == 404
        assert (await client.get("/vacancies/vac-bad")).status_code == 404
    assert await _count_rows(members, "students") == 0
    assert await _count_rows(members, "vacancies") == 0
    # Nothing of the other partners' changed, and nothing reached their rejected topics.
    assert await members.rejections(other_school, ids, settle_s=1.0, count=0) == []


async def test_a_good_event_after_bad_ones_is_still_stored(members) -> None:
    school, _ = await members.setup_network()
    await produce(
        members.bootstrap, partner_topics(school).ingress, KafkaRecord(b"x", b"\x00\xff garbage", {})
    )
    student_id = uid("stu")
    await members.publish(
        partner_event(school, "student.registered", student_data(student_id, school), student_id)
    )
    await _stored(members, f"/students/{student_id}")


async def _count_rows(members, table: str) -> int:
    from sqlalchemy import text

    async with members.runtime.sessions() as session:
        return int(await session.scalar(text(f"SELECT count(*) FROM {table}")))


async def test_api_and_ingress_give_the_same_state_and_the_same_events(members) -> None:
    school, _company = await members.setup_network()
    via_api, via_ingress = uid("stu"), uid("stu")
    async with members.client(organisation(school)) as client:
        response = await client.post("/students", json=student_data(via_api, school))
        assert response.status_code == 201, response.text
    await members.publish(
        partner_event(school, "student.registered", student_data(via_ingress, school), via_ingress)
    )
    stored_ingress = await _stored(members, f"/students/{via_ingress}")
    stored_api = await _stored(members, f"/students/{via_api}")

    def without_id(data: dict, student_id: str) -> str:
        return json.dumps(
            {**data, "student_id": None, "email": data["email"].replace(student_id, "")}, sort_keys=True
        )

    assert without_id(stored_api, via_api) == without_id(stored_ingress, via_ingress)
    events = await members.events(STUDENTS.name, lambda e: e.subject in (via_api, via_ingress), count=2)
    by_subject = {e.subject: e for e in events}
    assert by_subject[via_api].type == by_subject[via_ingress].type == ce_type("student.registered")
    assert without_id(await members.unsealed(by_subject[via_api]), via_api) == without_id(
        await members.unsealed(by_subject[via_ingress]), via_ingress
    )
