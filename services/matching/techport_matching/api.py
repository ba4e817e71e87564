"""Matching's HTTP API: matches of a student or a vacancy (best first, with reasons) and partnerships.

A school sees its students' matches. A company sees its vacancies' candidates as the contract allows (section
5): under the match's id, an opaque reference that no one can derive from a student id, with the candidate's
given name, level, programme, matched skills, and the distance in whole kilometres; nothing else of the
student (no id, no address, no exact distance: ten metres would locate a home).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel
from techport_shared.errors import Refused
from techport_shared.events import MatchReasons
from techport_shared.web import Bus, Caller, EntityId, OrganisationIdQuery, RequestContext, UoW, http_error

from techport_matching.handlers import AcceptPartnership, ProposePartnership, Reindex
from techport_matching.store import MatchingRepository, PartnershipRow, StudentRow, VacancyRow

router = APIRouter()


class StudentMatch(BaseModel):
    match_id: str
    vacancy_id: str
    organisation_id: str
    title: str
    score: float
    reasons: MatchReasons


class Candidate(BaseModel):
    """A matched candidate as a company sees it."""

    match_id: str  # the opaque reference of this candidate for this vacancy
    given_name: str
    level: str
    programme: str
    matched_skills: list[str]
    distance_km: int | None
    score: float


class Partnership(BaseModel):
    partnership_id: str
    company_id: str
    school_id: str
    status: str
    basis: dict[str, Any]
    proposed_by: str
    company_accepted: bool
    school_accepted: bool


class ProposeRequest(BaseModel):
    company_id: str
    school_id: str


class AcceptRequest(BaseModel):
    organisation_id: str | None = None  # for an operator accepting on a side's behalf


def _partnership(row: PartnershipRow) -> Partnership:
    return Partnership.model_validate(row, from_attributes=True)


def _repo(uow: Any) -> MatchingRepository:
    repo: MatchingRepository = uow.matching
    return repo


async def _run(bus: Any, command: Any, context: Any) -> Any:
    try:
        return await bus.handle(command, context)
    except Refused as refused:
        raise http_error(refused) from None


@router.get("/students/{student_id}/matches", response_model=list[StudentMatch])
async def student_matches(student_id: EntityId, actor: Caller, uow: UoW) -> list[StudentMatch]:
    repo = _repo(uow)
    student: StudentRow | None = await repo.get(StudentRow, student_id)
    if student is None:
        raise HTTPException(404, detail=f"unknown student {student_id}")
    if not actor.acts_for(student.school_id):
        raise HTTPException(403, detail="a school sees only its own students' matches")
    matches = await repo.open_matches(student_id=student_id)
    vacancies = await repo.vacancies([m.vacancy_id for m in matches])
    return [
        StudentMatch(
            match_id=m.match_id,
            vacancy_id=m.vacancy_id,
            organisation_id=m.organisation_id,
            title=vacancies[m.vacancy_id].title if m.vacancy_id in vacancies else "",
            score=m.score,
            reasons=MatchReasons.model_validate(m.reasons),
        )
        for m in matches
    ]


@router.get("/students/{student_id}/export", summary="Everything matching holds about a student")
async def export_student(student_id: EntityId, actor: Caller, uow: UoW) -> dict[str, Any]:
    repo = _repo(uow)
    student: StudentRow | None = await repo.get(StudentRow, student_id)
    if student is not None and not (actor.role == "service" or actor.acts_for(student.school_id)):
        raise HTTPException(403, detail="a school exports only its own students")
    if student is None and not (actor.role == "service" or actor.is_operator):
        raise HTTPException(404, detail=f"unknown student {student_id}")
    internal = {"pending", "pending_cause", "pending_correlation", "change_seq"}
    return {
        "student": None if student is None else student.model_dump(exclude=internal, mode="json"),
        "matches": [m.model_dump(mode="json") for m in await repo.matches_of(student_id)],
    }


@router.get("/vacancies/{vacancy_id}/matches", response_model=list[Candidate])
async def vacancy_matches(vacancy_id: EntityId, actor: Caller, uow: UoW) -> list[Candidate]:
    repo = _repo(uow)
    vacancy: VacancyRow | None = await repo.get(VacancyRow, vacancy_id)
    if vacancy is None:
        raise HTTPException(404, detail=f"unknown vacancy {vacancy_id}")
    if not actor.acts_for(vacancy.organisation_id):
        raise HTTPException(403, detail="a company sees only its own vacancies' candidates")
    matches = await repo.open_matches(vacancy_id=vacancy_id)
    students = await repo.students([m.student_id for m in matches])
    candidates = []
    for m in matches:
        student = students.get(m.student_id)
        if student is None:
            continue
        distance = m.reasons.get("distance_km")
        candidates.append(
            Candidate(
                match_id=m.match_id,
                given_name=student.given_name,
                level=student.level,
                programme=student.programme,
                matched_skills=list(m.reasons.get("matched_skills", [])),
                distance_km=None if distance is None else round(distance),
                score=m.score,
            )
        )
    return candidates


@router.get("/partnerships", response_model=list[Partnership])
async def list_partnerships(
    actor: Caller, uow: UoW, organisation_id: OrganisationIdQuery = None
) -> list[Partnership]:
    if not actor.is_operator:
        if organisation_id not in (None, actor.organisation_id):
            raise HTTPException(403, detail="an organisation sees only its own partnerships")
        organisation_id = actor.organisation_id
    rows = await _repo(uow).partnerships_of(organisation_id)
    return [_partnership(row) for row in rows]


@router.post("/partnerships", status_code=201, response_model=Partnership)
async def propose(body: ProposeRequest, bus: Bus, context: RequestContext) -> Partnership:
    return _partnership(await _run(bus, ProposePartnership(body.company_id, body.school_id), context))


@router.post("/partnerships/{partnership_id}/accept", response_model=Partnership)
async def accept(
    partnership_id: EntityId, bus: Bus, context: RequestContext, body: AcceptRequest | None = None
) -> Partnership:
    command = AcceptPartnership(partnership_id, body.organisation_id if body else None)
    return _partnership(await _run(bus, command, context))


@router.post("/admin/reindex", summary="Rebuild the index from the database (operator)", tags=["operations"])
async def reindex(request: Request, bus: Bus, context: RequestContext) -> dict[str, int]:
    stats = await _run(bus, Reindex(), context)
    return {"students": stats.students, "vacancies": stats.vacancies, "bytes": stats.nbytes}
