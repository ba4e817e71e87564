"""Members' use cases, one handler each, in one table (`HANDLERS`). The API sends commands; a partner's events
(from its own Kafka topic, or over HTTP) come as the contract's event models and take the same handlers, so
every path stores the same state and emits the same canonical events.

A handler loads what the rule needs through the unit of work, lets the domain decide (which refuses before
anything is written), stores, emits through the outbox, and commits once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from techport_shared.consumer import ConsumedRecord
from techport_shared.envelope import Envelope
from techport_shared.errors import Problem, Refused
from techport_shared.events import (
    IngressRejected,
    OrganisationData,
    OrganisationRegistered,
    StudentData,
    StudentRegistered,
    StudentUpdated,
    VacancyClosed,
    VacancyData,
    VacancyPosted,
    ce_type,
    dump,
)
from techport_shared.identity import Identity, organisation
from techport_shared.logging import get_logger
from techport_shared.messagebus import Context, ids_in
from techport_shared.sealing import seal
from techport_shared.topics import partner_of, partner_topics, topic_for_type

from techport_members import domain
from techport_members.domain import Decision
from techport_members.metrics import INGRESS, REGISTRATIONS, RETIRED_INGRESS, UNKNOWN_SKILLS
from techport_members.store import MembersUnitOfWork

log = get_logger(__name__)
SOURCE = "/members"
CONSUMER = "members-ingress"
# Creates an organisation's own ingress and rejected topics (the Kafka admin API; a fake in fast tests).
Provision = Callable[[str], Awaitable[None]]


# --- commands -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisterOrganisation:
    data: OrganisationData


@dataclass(frozen=True)
class RegisterStudent:
    data: StudentData
    must_exist: bool = False  # an update: the student must be registered (and not erased)


@dataclass(frozen=True)
class EraseStudent:
    student_id: str


@dataclass(frozen=True)
class PostVacancy:
    data: VacancyData


@dataclass(frozen=True)
class CloseVacancy:
    vacancy_id: str
    reason: str


# --- handlers -----------------------------------------------------------------------------------------------
_SEALED_TYPES = (ce_type("student.registered"), ce_type("student.updated"))


async def _emit(uow: MembersUnitOfWork, decision: Decision, subject: str, context: Context) -> None:
    for type_, data in decision.events:
        if type_ in _SEALED_TYPES:
            # A student's personal fields leave members sealed under the student's own key.
            kid, key = await uow.members.student_key(data["student_id"])
            data = seal(data, key, kid)
        uow.emit(topic_for_type(type_).name, context.origin.event(type_, SOURCE, data, subject))


def _count(entity: str, kind: str, decision: Decision, context: Context) -> None:
    if context.origin.channel in ("ingress", "http"):
        INGRESS.labels("accepted", "ok").inc()
    if decision.events:
        REGISTRATIONS.labels(entity, kind, context.origin.channel).inc()
    if decision.unknown_skills:
        UNKNOWN_SKILLS.inc(decision.unknown_skills)


async def register_organisation(
    command: RegisterOrganisation, uow: MembersUnitOfWork, context: Context, provision: Provision
) -> Decision:
    data = command.data
    decision = domain.register_organisation(
        context.actor, data, await uow.members.organisation(data.organisation_id)
    )
    if decision.events:
        assert decision.data is not None
        # Its topics exist before anyone is told of it: a partner may publish as soon as it is registered.
        await provision(data.organisation_id)
        await uow.members.save_organisation(decision.data)
        await _emit(uow, decision, data.organisation_id, context)
    await uow.commit()
    _count("organisation", data.kind, decision, context)
    return decision


async def register_student(command: RegisterStudent, uow: MembersUnitOfWork, context: Context) -> Decision:
    data = command.data
    school = await uow.members.organisation(data.school_id) if data.school_id else None
    existing = await uow.members.student(data.student_id)
    decision = domain.register_student(
        context.actor, data, existing, school, context.origin.occurred_at, command.must_exist
    )
    if decision.events:
        assert decision.data is not None
        await uow.members.save_student(decision.data)
        await _emit(uow, decision, data.student_id, context)
    await uow.commit()
    _count("student", "created" if decision.created else "updated", decision, context)
    return decision


async def erase_student(command: EraseStudent, uow: MembersUnitOfWork, context: Context) -> Decision:
    decision = domain.erase_student(
        context.actor, await uow.members.student(command.student_id), command.student_id
    )
    await uow.members.erase_student(command.student_id)
    await _emit(uow, decision, command.student_id, context)
    await uow.commit()
    _count("student", "erased", decision, context)
    return decision


async def post_vacancy(command: PostVacancy, uow: MembersUnitOfWork, context: Context) -> Decision:
    data = command.data
    company = await uow.members.organisation(data.organisation_id)
    existing = await uow.members.vacancy(data.vacancy_id)
    decision = domain.post_vacancy(context.actor, data, existing, company)
    if decision.events:
        assert decision.data is not None
        await uow.members.save_vacancy(decision.data)
        await _emit(uow, decision, data.vacancy_id, context)
    await uow.commit()
    _count("vacancy", "posted" if decision.created else "updated", decision, context)
    return decision


async def close_vacancy(command: CloseVacancy, uow: MembersUnitOfWork, context: Context) -> Decision:
    existing = await uow.members.vacancy(command.vacancy_id)
    decision = domain.close_vacancy(context.actor, existing, command.vacancy_id, command.reason)
    if decision.events:
        assert decision.data is not None
        await uow.members.save_vacancy(decision.data, closed_reason=command.reason)
        await _emit(uow, decision, command.vacancy_id, context)
    await uow.commit()
    _count("vacancy", "closed", decision, context)
    return decision


# --- a partner's events: the same handlers, as the contract's event types -----------------------------------
async def on_organisation_registered(
    event: OrganisationRegistered, uow: MembersUnitOfWork, context: Context, provision: Provision
) -> Decision:
    return await register_organisation(RegisterOrganisation(event), uow, context, provision)


async def on_student_registered(
    event: StudentRegistered, uow: MembersUnitOfWork, context: Context
) -> Decision:
    return await register_student(RegisterStudent(event), uow, context)


async def on_student_updated(event: StudentUpdated, uow: MembersUnitOfWork, context: Context) -> Decision:
    return await register_student(RegisterStudent(event, must_exist=True), uow, context)


async def on_vacancy_posted(event: VacancyPosted, uow: MembersUnitOfWork, context: Context) -> Decision:
    return await post_vacancy(PostVacancy(event), uow, context)


async def on_vacancy_closed(event: VacancyClosed, uow: MembersUnitOfWork, context: Context) -> Decision:
    return await close_vacancy(CloseVacancy(event.vacancy_id, event.reason), uow, context)


HANDLERS: dict[type, Callable[..., Awaitable[Any]]] = {
    RegisterOrganisation: register_organisation,
    RegisterStudent: register_student,
    EraseStudent: erase_student,
    PostVacancy: post_vacancy,
    CloseVacancy: close_vacancy,
    # What a partner may send (contract section 1: a partner's ingress topic, and POST /events).
    OrganisationRegistered: on_organisation_registered,
    StudentRegistered: on_student_registered,
    StudentUpdated: on_student_updated,
    VacancyPosted: on_vacancy_posted,
    VacancyClosed: on_vacancy_closed,
}


# --- the partner ingress: who speaks, and what a refusal becomes --------------------------------------------
async def preload(uow: MembersUnitOfWork, events: list[Envelope]) -> None:
    """Read what a batch of partner events will ask for, before its handlers run."""
    ids = ids_in(events, "student_id", "school_id", "organisation_id", "vacancy_id")
    organisations = ids["school_id"] | ids["organisation_id"]
    await uow.members.preload(ids["student_id"], organisations, ids["vacancy_id"])


def partner_actor(record: ConsumedRecord) -> Identity:
    """The acting organisation of a record is the owner of the topic it came from: only its credentials may
    write there (ACLs), so a header cannot make anyone else the actor."""
    partner = partner_of(record.topic)
    if partner is None:
        raise ValueError(f"{record.topic} is not a partner's ingress topic")
    return organisation(partner)


def check_source(envelope: Envelope, context: Context) -> list[Problem]:
    return domain.partner_source_problems(context.actor, context.source)


def ingress_consumer(context: Context) -> str:
    """(ce_source, ce_id) is unique per authenticated partner: each has its own processed-messages namespace,
    so no partner can use up another's ids."""
    return f"{CONSUMER}:{context.actor.organisation_id}"


def reject(uow: MembersUnitOfWork, envelope: Envelope, problems: list[Problem], context: Context) -> None:
    """A refused partner event: counted, and answered on the partner's own rejected topic (a refusal over HTTP
    is answered in the response instead). Nothing of the event is stored."""
    INGRESS.labels("rejected", Refused(problems).kind).inc()
    if context.origin.channel != "ingress" or context.actor.organisation_id is None:
        return
    partner = context.actor.organisation_id
    rejection = IngressRejected.of(
        envelope.id, envelope.type, envelope.source, [p.as_dict() for p in problems]
    )
    uow.emit(
        partner_topics(partner).rejected,
        context.origin.event(ce_type("ingress.rejected"), SOURCE, dump(rejection), subject=partner),
    )


class RetiredIngress:
    """Version 1's shared ingress topic: nothing written there is stored. Each record is counted and its
    claimed source logged (never its data), so an operator sees who still has to move over."""

    async def __call__(self, record: ConsumedRecord) -> str:
        source = (record.header("ce_source") or "")[:120]
        RETIRED_INGRESS.inc()
        log.warning(
            "an event on the retired shared ingress topic was not stored; the partner must use its own topic",
            claimed_source=source,
            ce_type=(record.header("ce_type") or "")[:120],
        )
        return "ignored"

    async def batch(self, records: list[ConsumedRecord]) -> list[str]:
        return [await self(record) for record in records]
