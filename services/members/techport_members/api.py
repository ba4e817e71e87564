"""Members' HTTP API (contract section 5): organisations, students, vacancies, and partner events over HTTP.

Request and response bodies are the API's own models (they may grow apart from the event contract); each
write becomes a command for the handler table, with the caller's verified identity (the gateway's signed
token) as the actor. A refusal becomes an HTTP status here and nowhere else.
"""

from __future__ import annotations

import base64
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from techport_shared.envelope import EnvelopeError, from_http
from techport_shared.errors import Refused
from techport_shared.events import (
    BrinCode,
    Consent,
    Crebo,
    Email,
    EntityId,
    KvkNumber,
    Language,
    Level,
    Location,
    LongText,
    OrganisationKind,
    OrganisationRegistered,
    Postcode,
    Seeking,
    SkillText,
    StudentRegistered,
    StudentUpdated,
    Text,
    VacancyPosted,
    field_errors,
)
from techport_shared.identity import Identity
from techport_shared.messagebus import EventDispatcher
from techport_shared.paging import DEFAULT_LIMIT, Cursor, Limit, Page, cursor_after, key_after, page
from techport_shared.postcodes import lookup
from techport_shared.skills import vocabulary
from techport_shared.topics import partner_topics
from techport_shared.web import (
    Bus,
    Caller,
    OrganisationIdQuery,
    RequestContext,
    UoW,
    field_errors_422,
    http_error,
)
from techport_shared.web import (
    EntityId as PathId,
)

from techport_members.domain import Decision, VacancySearch
from techport_members.handlers import (
    CloseVacancy,
    EraseStudent,
    PostVacancy,
    RegisterOrganisation,
    RegisterStudent,
)
from techport_members.store import MembersUnitOfWork

router = APIRouter()


class _Body(BaseModel):
    # A field the API does not know is an error the caller sees, not something silently dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OrganisationIn(_Body):
    organisation_id: EntityId
    kind: OrganisationKind
    name: Text
    email: Email
    postcode: Postcode
    city: Text
    location: Location | None = None
    kvk_number: KvkNumber | None = None
    brin_code: BrinCode | None = None
    accredited_training_company: bool | None = None
    sectors: list[Text] = Field(default_factory=list, max_length=50)


class OrganisationOut(OrganisationIn):
    model_config = ConfigDict(extra="ignore")
    # The organisation's own Kafka topics (contract section 1): shown to the organisation and operators.
    ingress_topic: str | None = None
    rejected_topic: str | None = None


class StudentFields(_Body):
    school_id: EntityId | None
    given_name: Text
    family_name: Text
    email: Email
    level: Level
    programme: Text
    crebo: Crebo | None = None
    skills: list[SkillText] = Field(default_factory=list, max_length=200)
    seeking: list[Seeking] = Field(min_length=1, max_length=4)
    postcode: Postcode
    location: Location | None = None
    max_distance_km: float = Field(default=25, gt=0, le=500)
    available_from: date | None = None
    preferred_language: Language = "nl"
    consent: Consent


class StudentIn(StudentFields):
    student_id: EntityId


class StudentOut(StudentIn):
    model_config = ConfigDict(extra="ignore")


class StudentPatch(_Body):
    """Every field of a student may be changed, except its id; what is left out stays as it is."""

    school_id: EntityId | None = None
    given_name: Text | None = None
    family_name: Text | None = None
    email: Email | None = None
    level: Level | None = None
    programme: Text | None = None
    crebo: Crebo | None = None
    skills: list[SkillText] | None = Field(default=None, max_length=200)
    seeking: list[Seeking] | None = Field(default=None, min_length=1, max_length=4)
    postcode: Postcode | None = None
    location: Location | None = None
    max_distance_km: float | None = Field(default=None, gt=0, le=500)
    available_from: date | None = None
    preferred_language: Language | None = None
    consent: Consent | None = None


class VacancyIn(_Body):
    vacancy_id: EntityId
    organisation_id: EntityId
    title: Text
    description: LongText = ""
    kind: Seeking
    required_skills: list[SkillText] = Field(default_factory=list, max_length=30)
    preferred_skills: list[SkillText] = Field(default_factory=list, max_length=100)
    levels: list[Level] = Field(default_factory=list, max_length=9)
    postcode: Postcode
    location: Location | None = None
    positions: int = Field(ge=1, le=10_000)
    hours_per_week: float | None = Field(default=None, gt=0, le=80)
    starts_on: date
    closes_on: date | None = None
    contact_email: Email


class VacancyOut(VacancyIn):
    model_config = ConfigDict(extra="ignore")
    status: Literal["open", "closed"]


class VacancyFound(VacancyOut):
    distance_km: int | None = None  # from `near`, in whole kilometres, when the search names a place


class CloseRequest(_Body):
    reason: Literal["filled", "withdrawn", "expired"] = "filled"


class EventResult(BaseModel):
    id: str | None
    accepted: bool
    errors: list[dict[str, str]] = Field(default_factory=list)


class EventResults(BaseModel):
    results: list[EventResult]


def _as_event(model: type[BaseModel], body: BaseModel | dict[str, Any]) -> Any:
    values = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise field_errors_422(field_errors(exc)) from None


async def _run(bus: Any, command: Any, context: Any, response: Response | None = None) -> Decision:
    try:
        decision: Decision = await bus.handle(command, context)
    except Refused as refused:
        raise http_error(refused) from None
    if response is not None:
        response.status_code = status.HTTP_201_CREATED if decision.created else status.HTTP_200_OK
    return decision


def _organisation_out(data: dict[str, Any], actor: Identity) -> dict[str, Any]:
    if not actor.acts_for(data["organisation_id"]):
        return data
    topics = partner_topics(data["organisation_id"])
    return {**data, "ingress_topic": topics.ingress, "rejected_topic": topics.rejected}


@router.post(
    "/organisations",
    status_code=201,
    response_model=OrganisationOut,
    summary="Register an organisation (operator), or update it; names its own Kafka topics",
)
async def register_organisation(
    body: OrganisationIn, bus: Bus, context: RequestContext, response: Response
) -> dict[str, Any]:
    decision = await _run(
        bus, RegisterOrganisation(_as_event(OrganisationRegistered, body)), context, response
    )
    assert decision.data is not None
    return _organisation_out(decision.data, context.actor)


@router.get("/organisations", response_model=Page[OrganisationOut], summary="Organisations (operators: all)")
async def list_organisations(
    actor: Caller,
    uow: UoW,
    kind: OrganisationKind | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """An operator pages through every organisation; an organisation's key sees itself (its owner)."""
    if not actor.is_operator and actor.organisation_id is None:
        raise HTTPException(403, detail="organisations are listed for operators and their owners")
    only = None if actor.is_operator else actor.organisation_id
    rows = await _members(uow).organisations_page(kind, only, key_after(cursor), limit + 1)
    return page([_organisation_out(row.data, actor) for row in rows], "organisation_id", limit)


@router.get("/organisations/{organisation_id}", response_model=OrganisationOut)
async def read_organisation(organisation_id: PathId, actor: Caller, uow: UoW) -> dict[str, Any]:
    found = await _members(uow).organisation(organisation_id)
    if found is None:
        raise HTTPException(404, detail=f"unknown organisation {organisation_id}")
    return _organisation_out(found.data, actor)


@router.post(
    "/students", status_code=201, response_model=StudentOut, summary="Register (or re-send) a student"
)
async def register_student(
    body: StudentIn, bus: Bus, context: RequestContext, response: Response
) -> dict[str, Any]:
    decision = await _run(bus, RegisterStudent(_as_event(StudentRegistered, body)), context, response)
    assert decision.data is not None
    return decision.data


async def _readable_student(uow: UoW, actor: Identity, student_id: str) -> dict[str, Any]:
    found = await _members(uow).student(student_id)
    if found is None or found.data is None:
        raise HTTPException(404, detail=f"unknown student {student_id}")
    if not actor.acts_for(found.school_id):
        raise HTTPException(403, detail="a school reads only its own students")
    return found.data


@router.get("/students", response_model=Page[StudentOut], summary="A school's students")
async def list_students(
    actor: Caller,
    uow: UoW,
    school_id: OrganisationIdQuery = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """A school's key lists its own students (`school_id` may be left out); an operator any school's, or
    everyone's without `school_id`. A company sees students only as the candidates of its vacancies."""
    repo = _members(uow)
    if not actor.is_operator:
        own = await repo.organisation(actor.organisation_id) if actor.organisation_id else None
        if own is None or own.kind != "school":
            raise HTTPException(403, detail="only a school lists students, and only its own")
        if school_id not in (None, own.organisation_id):
            raise HTTPException(403, detail="a school lists only its own students")
        school_id = own.organisation_id
    rows = await repo.students_page(school_id, key_after(cursor), limit + 1)
    return page([row.data for row in rows], "student_id", limit)


@router.get("/students/{student_id}", response_model=StudentOut)
async def read_student(student_id: PathId, actor: Caller, uow: UoW) -> dict[str, Any]:
    return await _readable_student(uow, actor, student_id)


@router.get("/students/{student_id}/export", summary="Everything members holds about a student")
async def export_student(student_id: PathId, actor: Caller, uow: UoW) -> dict[str, Any]:
    record = await _readable_student(uow, actor, student_id)
    key = await _members(uow).student_key_info(student_id)
    return {"student": record, "sealing_key": key}


@router.patch(
    "/students/{student_id}", response_model=StudentOut, summary="Change some of a student's fields"
)
async def update_student(
    student_id: PathId, body: StudentPatch, bus: Bus, context: RequestContext, uow: UoW, response: Response
) -> dict[str, Any]:
    current = await _readable_student(uow, context.actor, student_id)
    merged = {**current, **body.model_dump(mode="json", exclude_unset=True), "student_id": student_id}
    command = RegisterStudent(_as_event(StudentUpdated, merged), must_exist=True)
    decision = await _run(bus, command, context, response)
    assert decision.data is not None
    return decision.data


@router.delete("/students/{student_id}", status_code=202, summary="Erase a student's personal data")
async def erase_student(student_id: PathId, bus: Bus, context: RequestContext) -> dict[str, str]:
    await _run(bus, EraseStudent(student_id), context)
    return {"student_id": student_id, "status": "erased"}


@router.post("/vacancies", status_code=201, response_model=VacancyOut, summary="Post (or re-send) a vacancy")
async def post_vacancy(
    body: VacancyIn, bus: Bus, context: RequestContext, response: Response
) -> dict[str, Any]:
    decision = await _run(bus, PostVacancy(_as_event(VacancyPosted, body)), context, response)
    assert decision.data is not None
    return {**decision.data, "status": "open"}


# A search page reads at most this many vacancies: a search few vacancies fit returns a shorter page (or an
# empty one) with the cursor to go on from, rather than reading the whole table for one request.
SEARCH_READ_AT_MOST, SEARCH_CHUNK = 2000, 200


@router.get("/vacancies", response_model=Page[VacancyFound], summary="Search vacancies (every key)")
async def search_vacancies(
    uow: UoW,
    actor: Caller,
    kind: Seeking | None = None,
    level: Level | None = None,
    skill: Annotated[SkillText | None, Query()] = None,
    near: Annotated[str | None, Query(max_length=10, description="a postcode")] = None,
    radius_km: Annotated[float, Query(gt=0, le=500)] = 25,
    organisation_id: OrganisationIdQuery = None,
    status: Literal["open", "closed"] = "open",
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Open vacancies (or closed ones) that fit every criterion given, in id order; `near` a postcode and
    `radius_km` (25 unless given) a circle around it, each found vacancy then with its distance."""
    place = None
    if near is not None:
        area = lookup(near)
        if area is None:
            detail = [{"type": "value_error", "loc": ["query", "near"], "msg": f"unknown postcode {near!r}"}]
            raise HTTPException(422, detail=detail)
        place = (area.lat, area.lon)
    code = vocabulary().normalise(skill).code if skill else None
    search = VacancySearch(kind, level, code, place, radius_km)
    found: list[dict[str, Any]] = []
    after, read, exhausted = key_after(cursor), 0, False
    while len(found) <= limit and read < SEARCH_READ_AT_MOST and not exhausted:
        rows = await _members(uow).vacancies_page(status, organisation_id, after, SEARCH_CHUNK)
        exhausted = len(rows) < SEARCH_CHUNK
        for row in rows:
            read, after = read + 1, row.vacancy_id
            fits, distance = search.fits(row.data)
            if fits:
                km = None if distance is None else round(distance)
                found.append({**row.data, "status": row.status, "distance_km": km})
                if len(found) > limit:
                    break
    if len(found) > limit or exhausted or after is None:
        return page(found, "vacancy_id", limit)
    # SEARCH_READ_AT_MOST read and the page not full: the next page goes on from the last one read.
    return {"items": found, "next_cursor": cursor_after(after)}


@router.get("/vacancies/{vacancy_id}", response_model=VacancyOut)
async def read_vacancy(vacancy_id: PathId, actor: Caller, uow: UoW) -> dict[str, Any]:
    found = await _members(uow).vacancy(vacancy_id)
    if found is None:
        raise HTTPException(404, detail=f"unknown vacancy {vacancy_id}")
    return {**found.data, "status": found.status}


@router.post("/vacancies/{vacancy_id}/close", response_model=VacancyOut)
async def close_vacancy(
    vacancy_id: PathId, body: CloseRequest, bus: Bus, context: RequestContext
) -> dict[str, Any]:
    decision = await _run(bus, CloseVacancy(vacancy_id, body.reason), context)
    assert decision.data is not None
    return {**decision.data, "status": "closed"}


@router.post(
    "/events",
    status_code=202,
    response_model=EventResults,
    summary="Partner events over HTTP (the CloudEvents HTTP binding: binary, structured, or a batch of 500)",
)
async def partner_events(request: Request, actor: Caller) -> EventResults:
    """The same checks, ownership rules and events out as the partner's Kafka topic; the caller's API key
    is the acting organisation, and each event's `ce_source` must name it."""
    if actor.role != "organisation" or actor.organisation_id is None:
        raise HTTPException(403, detail="partner events are sent with the organisation's own API key")
    try:
        items = from_http(dict(request.headers), await request.body())
    except EnvelopeError as exc:
        detail = [{"type": "value_error", "loc": [exc.field], "msg": exc.message}]
        raise HTTPException(413 if exc.too_large else 422, detail=detail) from None
    ingress: EventDispatcher = request.app.state.ingress
    outcomes = await ingress.envelopes(items, actor)
    results = []
    for item, outcome in zip(items, outcomes, strict=True):
        event_id = None if isinstance(item, EnvelopeError) else item.id
        accepted = outcome.name in ("handled", "duplicate")
        results.append(
            EventResult(id=event_id, accepted=accepted, errors=[p.as_dict() for p in outcome.problems])
        )
    return EventResults(results=results)


class KeyWanted(_Body):
    student_id: EntityId
    key_id: Annotated[str, Field(max_length=40)]


class KeysWanted(_Body):
    keys: list[KeyWanted] = Field(max_length=1000)


@router.post("/internal/student-keys", include_in_schema=False)
async def student_keys(body: KeysWanted, actor: Caller, uow: UoW) -> dict[str, dict[str, str | None]]:
    """The keys of students' sealed fields, for the services that keep a copy of them (never through the
    gateway: only a service's signed identity is let in). A key that is gone (erased) is null."""
    if actor.role != "service":
        raise HTTPException(403, detail="for the platform's services only")
    keys = await _members(uow).student_keys({k.student_id: k.key_id for k in body.keys})
    return {"keys": {s: base64.b64encode(k).decode() if k else None for s, k in keys.items()}}


def _members(uow: Any) -> Any:
    members_uow: MembersUnitOfWork = uow
    return members_uow.members
