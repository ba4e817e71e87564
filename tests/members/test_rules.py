"""Members' rules and handlers in milliseconds: the domain alone, and the handler table over the fake unit of
work (an in-memory database, no broker). The flows over the real broker are in test_ingress.py and
test_api.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from techport_members import domain
from techport_members.handlers import (
    CONSUMER,
    HANDLERS,
    EraseStudent,
    RegisterOrganisation,
    RegisterStudent,
    check_source,
    ingress_consumer,
    reject,
)
from techport_members.store import MembersUnitOfWork, metadata, tables
from techport_shared.envelope import Envelope
from techport_shared.errors import Refused
from techport_shared.events import OrganisationRegistered, StudentRegistered, ce_type
from techport_shared.identity import OPERATOR, organisation
from techport_shared.messagebus import EventDispatcher, MessageBus, inject
from techport_shared.sealing import is_sealed, key_id, open_sealed
from techport_shared.topics import STUDENTS

from tests.fakes import context, fake_database
from tests.members.conftest import organisation_data, partner_event, student_data


@pytest.fixture
async def members():
    db = await fake_database(metadata, tables, MembersUnitOfWork)
    provisioned: list[str] = []

    async def provision(organisation_id: str) -> None:
        provisioned.append(organisation_id)

    bus = MessageBus(db.uow, inject(HANDLERS, provision=provision))
    ingress = EventDispatcher(
        "members", CONSUMER, bus, checks=check_source, reject=reject, consumer_of=ingress_consumer
    )
    for org, kind in (("school-a", "school"), ("school-b", "school"), ("company-c", "company")):
        await bus.handle(
            RegisterOrganisation(OrganisationRegistered.model_validate(organisation_data(org, kind))),
            context(OPERATOR),
        )
    yield db, bus, ingress, provisioned
    await db.close()


def _student(student_id: str, school: str | None, **changes) -> StudentRegistered:
    return StudentRegistered.model_validate(student_data(student_id, school, **changes))


# --- the domain alone ---------------------------------------------------------------------------------------
def test_a_partner_event_speaks_only_for_the_organisation_whose_credential_sent_it() -> None:
    assert domain.partner_source_problems(organisation("a"), "/partners/a") == []
    for source in ("/partners/b", "/partners/a/../b", "/hackers", ""):
        [problem] = domain.partner_source_problems(organisation("a"), source)
        assert problem.field == "ce_source" and problem.kind == "forbidden"
    assert domain.partner_source_problems(OPERATOR, None) == []  # an API request names no source


def test_a_school_registers_only_its_own_students_and_an_erasure_is_undone_only_by_a_newer_registration() -> (
    None
):
    school = domain.OrganisationState("school-a", "school", {})
    with pytest.raises(Refused) as refused:
        domain.register_student(
            organisation("school-b"), _student("s1", "school-a"), None, school, datetime.now(UTC)
        )
    assert refused.value.kind == "forbidden"
    erased_at = datetime.now(UTC)
    erased = domain.StudentState("s1", "school-a", None, erased_at)
    with pytest.raises(Refused) as late:
        domain.register_student(
            organisation("school-a"), _student("s1", "school-a"), erased, school, erased_at
        )
    assert late.value.kind == "conflict"
    later = erased_at + timedelta(seconds=1)
    decision = domain.register_student(
        organisation("school-a"), _student("s1", "school-a"), erased, school, later
    )
    assert decision.created and decision.events[0][0] == ce_type("student.registered")


def test_an_unknown_postcode_is_refused_without_repeating_it() -> None:
    school = domain.OrganisationState("school-a", "school", {})
    with pytest.raises(Refused) as refused:
        student = _student("s1", "school-a", postcode="1000 AA")
        domain.register_student(organisation("school-a"), student, None, school, datetime.now(UTC))
    [problem] = refused.value.problems
    assert problem.field == "postcode" and "1000" not in problem.message  # a postcode locates a person


# --- the handlers, over the fake unit of work ---------------------------------------------------------------
async def test_registering_an_organisation_makes_its_topics_first(members) -> None:
    _db, _bus, _ingress, provisioned = members
    assert provisioned == ["school-a", "school-b", "company-c"]


async def test_a_student_leaves_members_with_its_personal_fields_sealed_and_erasure_destroys_the_key(
    members,
) -> None:
    db, bus, _ingress, _provisioned = members
    await bus.handle(RegisterStudent(_student("s1", "school-a")), context(organisation("school-a")))
    [event] = await db.emitted(STUDENTS.name)
    assert is_sealed(event.data) and "email" not in event.data and "given_name" not in event.data
    assert all(b"s1@student.example.nl" not in value for value in await db.outbox_values())
    async with db.uow() as uow:
        keys = await uow.members.student_keys({"s1": key_id(event.data)})
    assert open_sealed(event.data, keys["s1"])["email"] == "s1@student.example.nl"
    await bus.handle(EraseStudent("s1"), context(organisation("school-a")))
    async with db.uow() as uow:
        assert await uow.members.student_keys({"s1": key_id(event.data)}) == {"s1": None}


async def test_over_http_a_batch_takes_the_good_events_and_refuses_each_bad_one(members) -> None:
    db, _bus, ingress, _provisioned = members
    good = partner_event("school-a", "student.registered", student_data("s2", "school-a"), "s2")
    forged = partner_event("school-b", "student.registered", student_data("s3", "school-b"), "s3")
    invalid = partner_event(
        "school-a", "student.registered", student_data("s4", "school-a", level="mbo-9"), "s4"
    )
    other_school = partner_event("school-a", "student.registered", student_data("s5", "school-b"), "s5")
    outcomes = await ingress.envelopes([good, forged, invalid, other_school], organisation("school-a"))
    assert [o.name for o in outcomes] == ["handled", "rejected", "rejected", "rejected"]
    assert [p.field for p in outcomes[1].problems] == ["ce_source"]
    assert [p.field for p in outcomes[2].problems] == ["data.level"]
    assert [p.field for p in outcomes[3].problems] == ["data.school_id"]
    async with db.uow() as uow:
        stored = [s for s in ("s2", "s3", "s4", "s5") if await uow.members.student(s)]
    assert stored == ["s2"]  # nothing of a refused event is stored
    assert [e.subject for e in await db.emitted(STUDENTS.name)] == ["s2"]


async def test_no_partner_can_use_up_another_partners_event_ids(members) -> None:
    _db, _bus, ingress, _provisioned = members
    stolen = partner_event(
        "school-b", "student.registered", student_data("b1", "school-b"), "b1", id="b-0001"
    )
    [refused] = await ingress.envelopes([stolen], organisation("school-a"))
    assert refused.name == "rejected"
    # The same (ce_source, ce_id) from its owner is new: ids are unique per authenticated partner.
    [taken] = await ingress.envelopes([stolen], organisation("school-b"))
    assert taken.name == "handled"
    [again] = await ingress.envelopes([stolen], organisation("school-b"))
    assert again.name == "duplicate"


async def test_an_unknown_type_from_a_partner_is_refused_not_ignored(members) -> None:
    _db, _bus, ingress, _provisioned = members
    unknown = Envelope(type="nl.techport.spaceship.launched.v1", source="/partners/school-a", data={"x": 1})
    [outcome] = await ingress.envelopes([unknown], organisation("school-a"))
    assert outcome.name == "rejected" and outcome.problems[0].field == "ce_type"


@pytest.mark.parametrize(
    ("body", "event"),
    [
        ("OrganisationIn", "OrganisationData"),
        ("StudentIn", "StudentData"),
        ("VacancyIn", "VacancyData"),
    ],
)
def test_an_api_body_takes_exactly_the_fields_of_its_event(body: str, event: str) -> None:
    """The HTTP bodies are models of their own (they refuse unknown fields; events allow a few small ones, as
    the contract asks), so this keeps them in step: one field added to an event and not to its body fails."""
    from techport_members import api
    from techport_shared import events

    body_fields = getattr(api, body).model_fields
    event_fields = getattr(events, event).model_fields
    assert set(body_fields) == set(event_fields)
    for name, field in event_fields.items():
        assert body_fields[name].is_required() == field.is_required(), name
        assert body_fields[name].annotation == field.annotation, name
