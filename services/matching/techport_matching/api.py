"""Matching's HTTP API: matches of a student or a vacancy (best first, with reasons) and partnerships.

A school sees its students' matches; a company sees its vacancies' candidates by first name, level, programme
and matched skills only, never a student's email or address."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from techport_shared.events import MatchReasons
from techport_shared.web import Caller, EntityId, OrganisationIdQuery, RequestId, UoW

from techport_matching.service import Matching, Origin, Refused
from techport_matching.store import MatchingRepository, PartnershipRow, StudentRow, VacancyRow


def matching(request: Request) -> Matching:
    service: Matching = request.app.state.matching
    return service


Service = Annotated[Matching, Depends(matching)]
router = APIRouter()


class StudentMatch(BaseModel):
    match_id: str
    vacancy_id: str
    organisation_id: str
    title: str
    score: float
    reasons: MatchReasons


class Candidate(BaseModel):
    match_id: str
    student_id: str
    given_name: str
    level: str
    programme: str
    matched_skills: list[str]
    score: float
    reasons: MatchReasons


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


@router.get("/students/{student_id}/matches", response_model=list[StudentMatch])
async def student_matches(student_id: EntityId, actor: Caller, uow: UoW) -> list[StudentMatch]:
    repo = MatchingRepository(uow.session)
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


@router.get("/vacancies/{vacancy_id}/matches", response_model=list[Candidate])
async def vacancy_matches(vacancy_id: EntityId, actor: Caller, uow: UoW) -> list[Candidate]:
    repo = MatchingRepository(uow.session)
    vacancy: VacancyRow | None = await repo.get(VacancyRow, vacancy_id)
    if vacancy is None:
        raise HTTPException(404, detail=f"unknown vacancy {vacancy_id}")
    if not actor.acts_for(vacancy.organisation_id):
        raise HTTPException(403, detail="a company sees only its own vacancies' candidates")
    matches = await repo.open_matches(vacancy_id=vacancy_id)
    students = await repo.students([m.student_id for m in matches])
    return [
        Candidate(
            match_id=m.match_id,
            student_id=m.student_id,
            given_name=students[m.student_id].given_name,
            level=students[m.student_id].level,
            programme=students[m.student_id].programme,
            matched_skills=list(m.reasons.get("matched_skills", [])),
            score=m.score,
            reasons=MatchReasons.model_validate(m.reasons),
        )
        for m in matches
        if m.student_id in students
    ]


@router.get("/partnerships", response_model=list[Partnership])
async def list_partnerships(
    actor: Caller, uow: UoW, organisation_id: OrganisationIdQuery = None
) -> list[Partnership]:
    if not actor.is_operator:
        if organisation_id not in (None, actor.organisation_id):
            raise HTTPException(403, detail="an organisation sees only its own partnerships")
        organisation_id = actor.organisation_id
    rows = await MatchingRepository(uow.session).partnerships_of(organisation_id)
    return [_partnership(row) for row in rows]


@router.post("/partnerships", status_code=201, response_model=Partnership)
async def propose(
    body: ProposeRequest, actor: Caller, uow: UoW, service: Service, request_id: RequestId
) -> Partnership:
    if not (actor.is_operator or actor.organisation_id in (body.company_id, body.school_id)):
        raise HTTPException(403, detail="an organisation proposes partnerships only for itself")
    by = "operator" if actor.is_operator else str(actor.organisation_id)
    try:
        row = await service.propose(uow, body.company_id, body.school_id, by, Origin(request_id, None))
    except Refused as refused:
        raise HTTPException(refused.status, detail=refused.detail) from None
    await uow.commit()
    return _partnership(row)


@router.post("/partnerships/{partnership_id}/accept", response_model=Partnership)
async def accept(
    partnership_id: EntityId,
    actor: Caller,
    uow: UoW,
    service: Service,
    request_id: RequestId,
    body: AcceptRequest | None = None,
) -> Partnership:
    side = (body.organisation_id if body else None) if actor.is_operator else actor.organisation_id
    if side is None:
        raise HTTPException(422, detail="organisation_id: an operator names the side it accepts for")
    try:
        row = await service.accept(uow, partnership_id, side, Origin(request_id, None))
    except Refused as refused:
        raise HTTPException(refused.status, detail=refused.detail) from None
    await uow.commit()
    return _partnership(row)


@router.post("/admin/reindex", summary="Rebuild the index from the database (operator)", tags=["operations"])
async def reindex(request: Request, actor: Caller, service: Service) -> dict[str, int]:
    if not actor.is_operator:
        raise HTTPException(403, detail="operators only")
    runtime = request.app.state.runtime
    async with request.app.state.index_lock:
        await service.rebuild_index(runtime.sessions)
    stats = service.index.stats()
    return {"students": stats.students, "vacancies": stats.vacancies, "bytes": stats.nbytes}
