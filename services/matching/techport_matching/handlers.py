"""Matching's use cases, one handler each, in one table (`HANDLERS`).

Members' events are stored first (their handlers below: the copy of students, vacancies and organisations,
and what an erasure, a closure or a withdrawn consent takes back at once). Then, in a transaction of its own,
`decide` matches what was stored against the index, caught up from the database first. Storing before deciding
is what lets replicas decide side by side without a shared lock: of a student and a vacancy stored at the same
moment by two replicas, the decision that starts later sees the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from techport_shared.db import erasure_stands, now
from techport_shared.envelope import Envelope, Origin
from techport_shared.errors import Refused
from techport_shared.events import (
    OrganisationRegistered,
    OrganisationUpdated,
    StudentData,
    StudentErased,
    StudentRegistered,
    StudentUpdated,
    VacancyClosed,
    VacancyData,
    VacancyPosted,
    VacancyUpdated,
    ce_type,
)
from techport_shared.messagebus import Context, ids_in
from techport_shared.topics import MATCHES
from techport_shared.topics import PARTNERSHIPS as PARTNERSHIPS_TOPIC

from techport_matching import domain
from techport_matching.decision import SOURCE, Decide, decide, propose
from techport_matching.keeper import IndexKeeper
from techport_matching.metrics import MATCHES_WITHDRAWN, PARTNERSHIPS
from techport_matching.store import (
    ErasedStudentRow,
    MatchingUnitOfWork,
    MatchRow,
    OrganisationRow,
    PartnershipRow,
    StudentRow,
    VacancyRow,
)


async def preload(uow: MatchingUnitOfWork, events: list[Envelope]) -> None:
    """Read what a batch of members' events will ask for, before its handlers run."""
    ids = ids_in(events, "student_id", "vacancy_id", "organisation_id")
    await uow.matching.preload(ids["student_id"], ids["vacancy_id"], ids["organisation_id"])


# --- members' events: stored, and what they take back at once -----------------------------------------------
async def on_organisation(
    event: OrganisationRegistered | OrganisationUpdated, uow: MatchingUnitOfWork, context: Context
) -> None:
    repo = uow.matching
    row = await repo.get(OrganisationRow, event.organisation_id) or OrganisationRow(
        organisation_id=event.organisation_id, kind=event.kind, name=event.name
    )
    row.kind, row.name = event.kind, event.name
    repo.add(row)
    await uow.commit()


def _pending(row: StudentRow | VacancyRow, context: Context) -> None:
    row.pending = True
    row.pending_cause = context.origin.causation_id
    row.pending_correlation = context.origin.correlation_id


async def _student(data: StudentData, uow: MatchingUnitOfWork, context: Context, registration: bool) -> None:
    repo = uow.matching
    event_type = ce_type("student.registered" if registration else "student.updated")
    if await erasure_stands(repo, ErasedStudentRow, data.student_id, event_type, context.origin.occurred_at):
        await uow.commit()
        return  # a late update does not bring an erased student back
    row = await repo.get(StudentRow, data.student_id) or StudentRow(
        student_id=data.student_id,
        given_name="",
        level="",
        programme="",
        seeking=[],
        skills=[],
        max_distance_km=0,
        consent_matching=False,
    )
    location = data.location
    row.school_id, row.given_name, row.level, row.programme = (
        data.school_id,
        data.given_name,
        data.level,
        data.programme,
    )
    row.seeking, row.skills = list(data.seeking), list(data.skills)
    row.lat, row.lon = (location.lat, location.lon) if location else (None, None)
    row.max_distance_km, row.consent_matching = data.max_distance_km, data.consent.matching
    row.updated_at, row.change_seq = now(), await repo.change_mark()
    _pending(row, context)
    repo.add(row)
    if not data.consent.matching:
        await _withdraw(
            uow, await repo.open_matches(student_id=data.student_id), "consent withdrawn", context.origin
        )
    await uow.commit()


async def on_student_registered(event: StudentRegistered, uow: MatchingUnitOfWork, context: Context) -> None:
    await _student(event, uow, context, registration=True)


async def on_student_updated(event: StudentUpdated, uow: MatchingUnitOfWork, context: Context) -> None:
    await _student(event, uow, context, registration=False)


async def on_student_erased(event: StudentErased, uow: MatchingUnitOfWork, context: Context) -> None:
    repo = uow.matching
    # The student's row first: a decision holding it (shared) finishes, and what it made is withdrawn here.
    await repo.delete_student(event.student_id)
    await _withdraw(
        uow, await repo.open_matches(student_id=event.student_id), "student erased", context.origin
    )
    if await repo.get(ErasedStudentRow, event.student_id) is None:
        repo.add(
            ErasedStudentRow(
                student_id=event.student_id,
                erased_at=context.origin.occurred_at,
                recorded_at=now(),
                change_seq=await repo.change_mark(),
            )
        )
    await uow.commit()


async def on_vacancy(
    event: VacancyPosted | VacancyUpdated, uow: MatchingUnitOfWork, context: Context
) -> None:
    data: VacancyData = event
    repo = uow.matching
    row = await repo.get(VacancyRow, data.vacancy_id)
    if row is not None and row.status == "closed":
        await uow.commit()
        return
    row = row or VacancyRow(
        vacancy_id=data.vacancy_id,
        organisation_id=data.organisation_id,
        title="",
        kind=data.kind,
        levels=[],
        required_skills=[],
        preferred_skills=[],
        status="open",
    )
    location = data.location
    row.organisation_id, row.title, row.kind = data.organisation_id, data.title, data.kind
    row.levels, row.required_skills, row.preferred_skills = (
        list(data.levels),
        list(data.required_skills),
        list(data.preferred_skills),
    )
    row.lat, row.lon = (location.lat, location.lon) if location else (None, None)
    row.updated_at, row.change_seq = now(), await repo.change_mark()
    _pending(row, context)
    repo.add(row)
    await uow.commit()


async def on_vacancy_closed(event: VacancyClosed, uow: MatchingUnitOfWork, context: Context) -> None:
    repo = uow.matching
    row = await repo.get(VacancyRow, event.vacancy_id)
    if row is not None:
        row.status, row.pending, row.updated_at = "closed", False, now()
        row.change_seq = await repo.change_mark()
        repo.add(row)
    matches = await repo.open_matches(vacancy_id=event.vacancy_id)
    await _withdraw(uow, matches, f"vacancy closed: {event.reason}", context.origin)
    await uow.commit()


async def _withdraw(uow: MatchingUnitOfWork, matches: list[MatchRow], reason: str, origin: Origin) -> None:
    per_vacancy: dict[str, int] = {}
    for match in matches:
        match.status, match.withdrawn_reason = "withdrawn", reason
        uow.matching.add(match)
        data = {"match_id": match.match_id, "reason": reason}
        uow.emit(MATCHES.name, origin.event(ce_type("match.withdrawn"), SOURCE, data, match.student_id))
        MATCHES_WITHDRAWN.labels(reason.split(":")[0]).inc()
        per_vacancy[match.vacancy_id] = per_vacancy.get(match.vacancy_id, 0) + 1
    for vacancy_id, count in sorted(per_vacancy.items()):
        await uow.matching.give_room(vacancy_id, count)


# --- the API's commands: partnerships, and rebuilding the index ---------------------------------------------
@dataclass(frozen=True)
class ProposePartnership:
    company_id: str
    school_id: str


@dataclass(frozen=True)
class AcceptPartnership:
    partnership_id: str
    side: str | None  # an operator names the side it accepts for


@dataclass(frozen=True)
class Reindex:
    pass


async def propose_partnership(
    command: ProposePartnership, uow: MatchingUnitOfWork, context: Context
) -> PartnershipRow:
    repo = uow.matching
    company = await repo.get(OrganisationRow, command.company_id)
    school = await repo.get(OrganisationRow, command.school_id)
    by = domain.check_proposal(
        context.actor,
        domain.Party(command.company_id, company.kind if company else None),
        domain.Party(command.school_id, school.kind if school else None),
        await repo.partnership_between(command.company_id, command.school_id) is not None,
    )
    matches = await repo.pair_matches(command.company_id, command.school_id)
    row = await propose(uow, command.company_id, command.school_id, by, matches, context.origin)
    if row is None:
        raise Refused.of("conflict", "partnership", "these two already have a partnership")
    await uow.commit()
    return row


async def accept_partnership(
    command: AcceptPartnership, uow: MatchingUnitOfWork, context: Context
) -> PartnershipRow:
    row: PartnershipRow | None = await uow.matching.get(PartnershipRow, command.partnership_id)
    if row is None:
        raise Refused.of("not_found", "partnership_id", f"unknown partnership {command.partnership_id}")
    side = domain.accepting_side(context.actor, command.side, row.company_id, row.school_id)
    if side == row.company_id:
        row.company_accepted = True
    if side == row.school_id:
        row.school_accepted = True
    if row.status == "proposed" and row.company_accepted and row.school_accepted:
        row.status, row.formed_at = "formed", now()
        data = {
            "partnership_id": row.partnership_id,
            "company_id": row.company_id,
            "school_id": row.school_id,
            "formed_at": row.formed_at.isoformat(),
        }
        uow.emit(
            PARTNERSHIPS_TOPIC.name,
            context.origin.event(ce_type("partnership.formed"), SOURCE, data, row.partnership_id),
        )
        PARTNERSHIPS.labels("formed").inc()
    uow.matching.add(row)
    await uow.commit()
    return row


async def reindex(command: Reindex, uow: MatchingUnitOfWork, context: Context, keeper: IndexKeeper) -> Any:
    if not context.actor.is_operator:
        raise Refused.of("forbidden", "actor", "operators only")
    await keeper.rebuild(uow.matching)
    return keeper.index.stats()


HANDLERS: dict[type, Callable[..., Awaitable[Any]]] = {
    OrganisationRegistered: on_organisation,
    OrganisationUpdated: on_organisation,
    StudentRegistered: on_student_registered,
    StudentUpdated: on_student_updated,
    StudentErased: on_student_erased,
    VacancyPosted: on_vacancy,
    VacancyUpdated: on_vacancy,
    VacancyClosed: on_vacancy_closed,
    Decide: decide,
    ProposePartnership: propose_partnership,
    AcceptPartnership: accept_partnership,
    Reindex: reindex,
}
