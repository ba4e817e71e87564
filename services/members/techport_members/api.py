"""Members' HTTP API (contract section 5): organisations, students, vacancies. The caller's identity comes
from the gateway's signed token; ownership is enforced here by the same rules as the partner ingress."""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ValidationError, create_model
from techport_shared.events import (
    OrganisationRegistered,
    StudentData,
    StudentRegistered,
    StudentUpdated,
    VacancyPosted,
    field_errors,
)
from techport_shared.identity import Identity
from techport_shared.uow import UnitOfWork
from techport_shared.web import Caller, EntityId, RequestId, UoW, field_errors_422

from techport_members import service
from techport_members.domain import STATUS, Decision, Rejected
from techport_members.service import Cause

router = APIRouter()


class CloseRequest(BaseModel):
    reason: Literal["filled", "withdrawn", "expired"] = "filled"


class VacancyOut(VacancyPosted):
    status: Literal["open", "closed"]


# Every field of a student may be changed by PATCH, except its id.
StudentPatch = create_model(  # type: ignore[call-overload]
    "StudentPatch",
    **{
        name: (Optional[info.annotation], None)  # noqa: UP045 (a type built at run time)
        for name, info in StudentData.model_fields.items()
        if name != "student_id"
    },
)


def _http_error(rejected: Rejected) -> HTTPException:
    kind = rejected.kind
    if kind == "invalid":
        return field_errors_422([p.as_dict() for p in rejected.problems if p.kind == "invalid"])
    problems = [p.as_dict() for p in rejected.problems if p.kind == kind]
    return HTTPException(STATUS[kind], detail="; ".join(f"{p['field']}: {p['message']}" for p in problems))


async def _commit(uow: UnitOfWork, decision: Decision, response: Response) -> dict[str, Any]:
    await uow.commit()
    response.status_code = status.HTTP_201_CREATED if decision.created else status.HTTP_200_OK
    assert decision.data is not None
    return decision.data


@router.post(
    "/organisations",
    status_code=201,
    response_model=OrganisationRegistered,
    summary="Register an organisation (operator), or update it",
)
async def register_organisation(
    body: OrganisationRegistered, actor: Caller, uow: UoW, request_id: RequestId, response: Response
) -> dict[str, Any]:
    try:
        decision = await service.register_organisation(uow, actor, body, Cause.of_request(request_id))
    except Rejected as rejected:
        raise _http_error(rejected) from None
    return await _commit(uow, decision, response)


@router.get("/organisations/{organisation_id}", response_model=OrganisationRegistered)
async def read_organisation(organisation_id: EntityId, actor: Caller, uow: UoW) -> dict[str, Any]:
    found = await service.read(uow, "organisation", organisation_id)
    if found is None:
        raise HTTPException(404, detail=f"unknown organisation {organisation_id}")
    return found.data


@router.post(
    "/students", status_code=201, response_model=StudentRegistered, summary="Register (or re-send) a student"
)
async def register_student(
    body: StudentRegistered, actor: Caller, uow: UoW, request_id: RequestId, response: Response
) -> dict[str, Any]:
    try:
        decision = await service.register_student(uow, actor, body, Cause.of_request(request_id))
    except Rejected as rejected:
        raise _http_error(rejected) from None
    return await _commit(uow, decision, response)


async def _readable_student(uow: UnitOfWork, actor: Identity, student_id: str) -> dict[str, Any]:
    found = await service.read(uow, "student", student_id)
    if found is None or not found.live:
        raise HTTPException(404, detail=f"unknown student {student_id}")
    if not actor.acts_for(found.school_id):
        raise HTTPException(403, detail="a school reads only its own students")
    return found.data


@router.get("/students/{student_id}", response_model=StudentRegistered)
async def read_student(student_id: EntityId, actor: Caller, uow: UoW) -> dict[str, Any]:
    return await _readable_student(uow, actor, student_id)


@router.patch(
    "/students/{student_id}", response_model=StudentRegistered, summary="Change some of a student's fields"
)
async def update_student(
    student_id: EntityId,
    body: StudentPatch,
    actor: Caller,
    uow: UoW,
    request_id: RequestId,
    response: Response,
) -> dict[str, Any]:
    current = await _readable_student(uow, actor, student_id)
    merged = {**current, **body.model_dump(exclude_unset=True), "student_id": student_id}
    try:
        model = StudentUpdated.model_validate(merged)
    except ValidationError as exc:
        raise field_errors_422(field_errors(exc)) from None
    try:
        decision = await service.register_student(
            uow, actor, model, Cause.of_request(request_id), must_exist=True
        )
    except Rejected as rejected:
        raise _http_error(rejected) from None
    return await _commit(uow, decision, response)


@router.delete("/students/{student_id}", status_code=202, summary="Erase a student's personal data")
async def erase_student(
    student_id: EntityId, actor: Caller, uow: UoW, request_id: RequestId
) -> dict[str, str]:
    try:
        await service.erase_student(uow, actor, student_id, Cause.of_request(request_id))
    except Rejected as rejected:
        raise _http_error(rejected) from None
    await uow.commit()
    return {"student_id": student_id, "status": "erased"}


@router.post("/vacancies", status_code=201, response_model=VacancyOut, summary="Post (or re-send) a vacancy")
async def post_vacancy(
    body: VacancyPosted, actor: Caller, uow: UoW, request_id: RequestId, response: Response
) -> dict[str, Any]:
    try:
        decision = await service.post_vacancy(uow, actor, body, Cause.of_request(request_id))
    except Rejected as rejected:
        raise _http_error(rejected) from None
    return {**await _commit(uow, decision, response), "status": "open"}


@router.get("/vacancies/{vacancy_id}", response_model=VacancyOut)
async def read_vacancy(vacancy_id: EntityId, actor: Caller, uow: UoW) -> dict[str, Any]:
    found = await service.read(uow, "vacancy", vacancy_id)
    if found is None:
        raise HTTPException(404, detail=f"unknown vacancy {vacancy_id}")
    return {**found.data, "status": found.status}


@router.post("/vacancies/{vacancy_id}/close", response_model=VacancyOut)
async def close_vacancy(
    vacancy_id: EntityId, body: CloseRequest, actor: Caller, uow: UoW, request_id: RequestId
) -> dict[str, Any]:
    try:
        decision = await service.close_vacancy(
            uow, actor, vacancy_id, body.reason, Cause.of_request(request_id)
        )
    except Rejected as rejected:
        raise _http_error(rejected) from None
    await uow.commit()
    assert decision.data is not None
    return {**decision.data, "status": "closed"}
