"""Matching's rules and handlers in milliseconds: partnership rules, opaque match references, and store-then-
decide over the fake unit of work (an in-memory database and the real index, no broker). The flows over the
real broker, replicas included, are in test_matching_flow.py."""

from __future__ import annotations

import pytest
from techport_matching import domain
from techport_matching.handlers import HANDLERS, AcceptPartnership, Decide, ProposePartnership
from techport_matching.keeper import IndexKeeper
from techport_matching.settings import MatchingSettings
from techport_matching.store import ChangeCounterRow, MatchingUnitOfWork, metadata, tables
from techport_shared.errors import Refused
from techport_shared.events import (
    OrganisationRegistered,
    StudentErased,
    StudentRegistered,
    VacancyClosed,
    VacancyPosted,
    ce_type,
)
from techport_shared.identity import OPERATOR, organisation, service_identity
from techport_shared.messagebus import MessageBus, inject
from techport_shared.topics import MATCHES, PARTNERSHIPS

from tests.fakes import context, fake_database, issued
from tests.matching.conftest import student, vacancy


def test_a_match_id_is_an_opaque_reference_no_one_derives_from_a_student_id() -> None:
    one = domain.match_id("stu-1", "vac-1", b"key-one")
    assert one == domain.match_id("stu-1", "vac-1", b"key-one")  # one id per pair, whoever finds it
    assert one != domain.match_id("stu-1", "vac-1", b"key-two") and "stu-1" not in one


def test_who_proposes_and_accepts_a_partnership() -> None:
    company, school = domain.Party("c1", "company"), domain.Party("s1", "school")
    assert domain.check_proposal(organisation("s1"), company, school, existing=False) == "s1"
    assert domain.check_proposal(OPERATOR, company, school, existing=False) == "operator"
    with pytest.raises(Refused) as stranger:
        domain.check_proposal(organisation("x"), company, school, existing=False)
    assert stranger.value.kind == "forbidden"
    with pytest.raises(Refused) as twice:
        domain.check_proposal(OPERATOR, company, school, existing=True)
    assert twice.value.kind == "conflict"
    with pytest.raises(Refused):
        domain.check_proposal(OPERATOR, domain.Party("s1", "school"), school, existing=False)
    assert domain.accepting_side(organisation("c1"), None, "c1", "s1") == "c1"
    assert domain.accepting_side(OPERATOR, "s1", "c1", "s1") == "s1"
    with pytest.raises(Refused):
        domain.accepting_side(OPERATOR, None, "c1", "s1")


@pytest.fixture
async def matching():
    db = await fake_database(metadata, tables, MatchingUnitOfWork)
    async with db.sessions() as session:
        session.add(ChangeCounterRow(id=1, value=0))
        await session.commit()
    settings = MatchingSettings(
        database_url="sqlite://", identity_secret="fast-test-secret", partnership_min_matches=2
    )
    keeper = IndexKeeper(settings.top_k_per_vacancy)
    bus = MessageBus(db.uow, inject(HANDLERS, keeper=keeper, settings=settings, key=b"fast-key"))
    events = context(service_identity("matching"), channel="event")
    for org, kind in (("school-1", "school"), ("company-1", "company")):
        data = {
            "organisation_id": org,
            "kind": kind,
            "name": org,
            "email": "x@example.nl",
            "postcode": "1971 AB",
            "city": "IJmuiden",
        }
        await bus.handle(OrganisationRegistered.model_validate(data), events)
    yield db, bus, events
    await db.close()


async def test_stored_then_decided_a_student_and_a_vacancy_match_once_and_closing_withdraws(matching) -> None:
    db, bus, events = matching
    await bus.handle(StudentRegistered.model_validate(student("stu-1", "school-1")), events)
    await bus.handle(VacancyPosted.model_validate(vacancy("vac-1", "company-1")), events)
    await bus.handle(Decide(("stu-1",), ("vac-1",)), events)
    await bus.handle(Decide(("stu-1",), ("vac-1",)), events)  # decided already: nothing more
    found = [e for e in await db.emitted(MATCHES.name) if e.type == ce_type("match.found")]
    assert [(e.data["student_id"], e.data["vacancy_id"]) for e in found] == [("stu-1", "vac-1")]
    assert found[0].data["match_id"] == domain.match_id("stu-1", "vac-1", b"fast-key")
    await bus.handle(VacancyClosed(vacancy_id="vac-1", reason="filled"), events)
    withdrawn = [e for e in await db.emitted(MATCHES.name) if e.type == ce_type("match.withdrawn")]
    assert [e.data["reason"] for e in withdrawn] == ["vacancy closed: filled"]


async def test_an_erased_student_is_withdrawn_and_never_matched_again(matching) -> None:
    db, bus, events = matching
    await bus.handle(VacancyPosted.model_validate(vacancy("vac-2", "company-1")), events)
    await bus.handle(Decide((), ("vac-2",)), events)
    await bus.handle(StudentRegistered.model_validate(student("stu-2", "school-1")), events)
    await bus.handle(StudentErased(student_id="stu-2"), events)
    await bus.handle(Decide(("stu-2",), ()), events)
    assert [e for e in await db.emitted(MATCHES.name) if e.type == ce_type("match.found")] == []


async def test_the_second_match_between_a_company_and_a_school_proposes_a_partnership_once(matching) -> None:
    db, bus, events = matching
    for n in range(3):
        await bus.handle(StudentRegistered.model_validate(student(f"stu-p{n}", "school-1")), events)
    await bus.handle(VacancyPosted.model_validate(vacancy("vac-p", "company-1")), events)
    await bus.handle(Decide(("stu-p0", "stu-p1", "stu-p2"), ("vac-p",)), events)
    [proposed] = await db.emitted(PARTNERSHIPS.name)
    assert proposed.data["basis"]["matches"] == 2  # at the second: PARTNERSHIP_MIN_MATCHES is 2 here
    with pytest.raises(Refused):
        await bus.handle(ProposePartnership("company-1", "school-1"), context(organisation("school-1")))
    partnership = proposed.data["partnership_id"]
    await bus.handle(AcceptPartnership(partnership, None), context(organisation("company-1")))
    await bus.handle(AcceptPartnership(partnership, None), context(organisation("school-1")))
    formed = [e for e in await db.emitted(PARTNERSHIPS.name) if e.type == ce_type("partnership.formed")]
    assert len(formed) == 1


async def test_a_decision_asks_nothing_of_the_side_it_was_not_given(matching) -> None:
    # A statement for an empty list of ids finds nothing and still costs a trip through SQLAlchemy: a batch
    # of students alone ran several (its vacancies pending, the students its vacancies found).
    db, bus, events = matching
    await bus.handle(VacancyPosted.model_validate(vacancy("vac-e", "company-1")), events)
    await bus.handle(Decide((), ("vac-e",)), events)
    await bus.handle(StudentRegistered.model_validate(student("stu-e", "school-1")), events)
    with issued(db.engine) as statements:
        await bus.handle(Decide(("stu-e",), ()), events)
    found = [e for e in await db.emitted(MATCHES.name) if e.type == ce_type("match.found")]
    assert [(e.data["student_id"], e.data["vacancy_id"]) for e in found] == [("stu-e", "vac-e")]
    assert statements and [sql for sql, _ in statements if "1!=1" in sql.replace(" ", "")] == []
