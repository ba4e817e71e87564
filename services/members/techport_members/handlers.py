"""Partner ingress: every event on `techport.partner-ingress.v1` is checked completely, then either stored
(through the same use cases as the API) or answered with `ingress.rejected` listing every error found.
Nothing of a rejected event is stored; a redelivered event (same ce_source and ce_id) has effect once."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from techport_shared.consumer import ConsumedRecord
from techport_shared.envelope import Envelope, EnvelopeError, from_record
from techport_shared.events import IngressRejected, ce_type, dump, field_errors, parse_data
from techport_shared.identity import Identity, organisation
from techport_shared.topics import PARTNER_INGRESS, PARTNER_INGRESS_REJECTED
from techport_shared.uow import DuplicateMessage, UnitOfWork

from techport_members import service
from techport_members.domain import Problem, Rejected
from techport_members.metrics import INGRESS
from techport_members.service import Cause
from techport_members.store import MembersRepository

CONSUMER = "members-ingress"
_PARTNER_SOURCE = re.compile(r"^/partners/([A-Za-z0-9._:-]{1,64})$")

UseCase = Callable[[UnitOfWork, Identity, Any, Cause], Awaitable[Any]]


async def _register_student(uow: UnitOfWork, actor: Identity, model: Any, cause: Cause) -> Any:
    return await service.register_student(uow, actor, model, cause)


async def _update_student(uow: UnitOfWork, actor: Identity, model: Any, cause: Cause) -> Any:
    return await service.register_student(uow, actor, model, cause, must_exist=True)


async def _close_vacancy(uow: UnitOfWork, actor: Identity, model: Any, cause: Cause) -> Any:
    return await service.close_vacancy(uow, actor, model.vacancy_id, model.reason, cause)


USE_CASES: dict[str, UseCase] = {
    ce_type("organisation.registered"): service.register_organisation,
    ce_type("student.registered"): _register_student,
    ce_type("student.updated"): _update_student,
    ce_type("vacancy.posted"): service.post_vacancy,
    ce_type("vacancy.closed"): _close_vacancy,
}
assert set(USE_CASES) == set(PARTNER_INGRESS.types)


def partner_id(source: str | None) -> str | None:
    match = _PARTNER_SOURCE.match(source or "")
    return match.group(1) if match else None


class PartnerIngress:
    """The record handler of the ingress topic."""

    def __init__(self, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self._unit_of_work = unit_of_work

    async def __call__(self, record: ConsumedRecord) -> str:
        try:
            envelope = from_record(record.key, record.value, record.headers)
        except EnvelopeError as exc:
            return await self._reject_unreadable(record, Problem(exc.field, exc.message))
        async with self._unit_of_work() as uow:
            if not await uow.claim(CONSUMER, envelope.source, envelope.id):
                return "duplicate"
            problems = await self._apply(uow, envelope)
            if problems:
                # Roll back anything the checks touched; keep only the processed mark and the rejection.
                await uow.session.rollback()
                await uow.claim(CONSUMER, envelope.source, envelope.id)
                self._emit_rejection(uow, envelope, problems)
            try:
                await uow.commit()
            except DuplicateMessage:
                return "duplicate"
        INGRESS.labels("rejected" if problems else "accepted", _reason(problems)).inc()
        return "rejected" if problems else "handled"

    async def _apply(self, uow: UnitOfWork, envelope: Envelope) -> list[Problem]:
        problems: list[Problem] = []
        partner = partner_id(envelope.source)
        if partner is None:
            problems.append(Problem("ce_source", "must be /partners/<organisation id>", "forbidden"))
        elif await MembersRepository(uow.session).organisation(partner) is None:
            problems.append(Problem("ce_source", f"{partner} is not a registered organisation", "forbidden"))
        use_case = USE_CASES.get(envelope.type)
        if use_case is None:
            problems.append(Problem("ce_type", f"{envelope.type} is not accepted on the ingress topic"))
            return problems
        try:
            model = parse_data(envelope.type, envelope.data)
        except ValidationError as exc:
            return problems + [Problem(f"data.{e['field']}", e["message"]) for e in field_errors(exc)]
        if problems or partner is None:
            return problems
        try:
            await use_case(uow, organisation(partner), model, Cause.of_event(envelope))
        except Rejected as rejected:
            return [Problem(f"data.{p.field}", p.message, p.kind) for p in rejected.problems]
        return []

    def _emit_rejection(self, uow: UnitOfWork, envelope: Envelope, problems: list[Problem]) -> None:
        rejection = IngressRejected(
            ce_id=envelope.id,
            ce_type=envelope.type,
            ce_source=envelope.source,
            errors=[p.as_dict() for p in problems],
        )
        subject = partner_id(envelope.source) or "unknown"
        uow.emit(
            PARTNER_INGRESS_REJECTED.name,
            envelope.caused(ce_type("ingress.rejected"), service.SOURCE, dump(rejection), subject=subject),
        )

    async def _reject_unreadable(self, record: ConsumedRecord, problem: Problem) -> str:
        """Not a readable CloudEvent: reject with what the headers tell; dedupe by its place in the topic."""
        source = record.header("ce_source") or ""
        event_id = record.header("ce_id") or ""
        async with self._unit_of_work() as uow:
            if not await uow.claim(CONSUMER, f"kafka:{record.topic}", f"{record.partition}:{record.offset}"):
                return "duplicate"
            place = f"{record.topic}/{record.partition}/{record.offset}"
            stand_in = Envelope(
                type=record.header("ce_type") or "", source=source, id=event_id or place, data={}
            )
            self._emit_rejection(uow, stand_in, [problem])
            try:
                await uow.commit()
            except DuplicateMessage:
                return "duplicate"
        INGRESS.labels("rejected", "envelope").inc()
        return "rejected"


def _reason(problems: list[Problem]) -> str:
    if not problems:
        return "ok"
    kinds = {p.kind for p in problems}
    for kind in ("forbidden", "not_found", "conflict"):
        if kind in kinds:
            return kind
    return "invalid"
