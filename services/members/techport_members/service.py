"""Members' use cases: load what the rule needs, let the domain decide, store the result and emit its events
through the outbox, in the caller's unit of work. The API and the partner ingress both call these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from techport_shared.envelope import Envelope
from techport_shared.events import OrganisationData, StudentData, VacancyData
from techport_shared.identity import Identity
from techport_shared.topics import topic_for_type
from techport_shared.uow import UnitOfWork

from techport_members import domain
from techport_members.domain import Decision
from techport_members.metrics import REGISTRATIONS, UNKNOWN_SKILLS
from techport_members.store import MembersRepository

SOURCE = "/members"


@dataclass(frozen=True)
class Cause:
    """Where a change came from: its events carry this correlation id and name this cause."""

    correlation_id: str | None
    causation_id: str | None
    occurred_at: datetime
    channel: str

    @classmethod
    def of_event(cls, event: Envelope) -> Cause:
        return cls(event.correlationid or event.id, event.id, event.time, "ingress")

    @classmethod
    def of_request(cls, request_id: str) -> Cause:
        return cls(request_id, None, datetime.now(UTC), "api")


def _emit(uow: UnitOfWork, decision: Decision, subject: str, cause: Cause) -> None:
    for type_, data in decision.events:
        uow.emit(
            topic_for_type(type_).name,
            Envelope(
                type=type_,
                source=SOURCE,
                subject=subject,
                data=data,
                correlationid=cause.correlation_id,
                causationid=cause.causation_id,
            ),
        )


def _count(entity: str, kind: str, decision: Decision, cause: Cause) -> None:
    if decision.events:
        REGISTRATIONS.labels(entity, kind, cause.channel).inc()
    if decision.unknown_skills:
        UNKNOWN_SKILLS.inc(decision.unknown_skills)


async def register_organisation(
    uow: UnitOfWork, actor: Identity, model: OrganisationData, cause: Cause
) -> Decision:
    repo = MembersRepository(uow.session)
    decision = domain.register_organisation(actor, model, await repo.organisation(model.organisation_id))
    if decision.events:
        assert decision.data is not None
        await repo.save_organisation(decision.data)
        _emit(uow, decision, model.organisation_id, cause)
    _count("organisation", model.kind, decision, cause)
    return decision


async def register_student(
    uow: UnitOfWork, actor: Identity, model: StudentData, cause: Cause, must_exist: bool = False
) -> Decision:
    repo = MembersRepository(uow.session)
    school = await repo.organisation(model.school_id) if model.school_id else None
    existing = await repo.student(model.student_id)
    decision = domain.register_student(actor, model, existing, school, cause.occurred_at, must_exist)
    if decision.events:
        assert decision.data is not None
        await repo.save_student(decision.data)
        _emit(uow, decision, model.student_id, cause)
    _count("student", "created" if decision.created else "updated", decision, cause)
    return decision


async def erase_student(uow: UnitOfWork, actor: Identity, student_id: str, cause: Cause) -> Decision:
    repo = MembersRepository(uow.session)
    decision = domain.erase_student(actor, await repo.student(student_id), student_id)
    await repo.erase_student(student_id)
    _emit(uow, decision, student_id, cause)
    _count("student", "erased", decision, cause)
    return decision


async def post_vacancy(
    uow: UnitOfWork, actor: Identity, model: VacancyData, cause: Cause, must_exist: bool = False
) -> Decision:
    repo = MembersRepository(uow.session)
    company = await repo.organisation(model.organisation_id)
    decision = domain.post_vacancy(actor, model, await repo.vacancy(model.vacancy_id), company, must_exist)
    if decision.events:
        assert decision.data is not None
        await repo.save_vacancy(decision.data)
        _emit(uow, decision, model.vacancy_id, cause)
    _count("vacancy", "posted" if decision.created else "updated", decision, cause)
    return decision


async def close_vacancy(
    uow: UnitOfWork, actor: Identity, vacancy_id: str, reason: str, cause: Cause
) -> Decision:
    repo = MembersRepository(uow.session)
    decision = domain.close_vacancy(actor, await repo.vacancy(vacancy_id), vacancy_id, reason)
    if decision.events:
        assert decision.data is not None
        await repo.save_vacancy(decision.data, closed_reason=reason)
        _emit(uow, decision, vacancy_id, cause)
    _count("vacancy", "closed", decision, cause)
    return decision


async def read(uow: UnitOfWork, entity: str, entity_id: str) -> Any:
    repo = MembersRepository(uow.session)
    return await {"organisation": repo.organisation, "student": repo.student, "vacancy": repo.vacancy}[
        entity
    ](entity_id)
