"""Notifications' use cases, one handler each, in one table (`HANDLERS`): the recipients it keeps (from
members' events), what to tell them (matching's events, collected into digests scheduled in the database),
and the commands of the API and the sender (unsubscribe and undo, claim what is due, record a delivery).

One email per (recipient, match): an item is recorded once per recipient and subject, and a digest is a row
with a due time, so a restart neither loses nor repeats it. Sending itself is in sender.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from techport_shared.db import erasure_stands, now
from techport_shared.envelope import Envelope
from techport_shared.events import (
    MAX_DIGEST_ITEMS,
    STUDENT_TYPES,
    MatchFound,
    OrganisationRegistered,
    OrganisationUpdated,
    PartnershipFormed,
    StudentData,
    StudentErased,
    StudentRegistered,
    StudentUpdated,
    VacancyData,
    VacancyPosted,
    VacancyUpdated,
    ce_type,
)
from techport_shared.limits import MAX_ERROR_CHARS, trim
from techport_shared.logging import scrub
from techport_shared.messagebus import Context
from techport_shared.postcodes import lookup
from techport_shared.sealing import StudentKeys
from techport_shared.topics import NOTIFICATIONS as NOTIFICATIONS_TOPIC

from techport_notifications.domain import (
    ORGANISATION,
    STUDENT,
    VACANCY_CONTACT,
    Recipient,
    address_fingerprint,
)
from techport_notifications.metrics import NOTIFICATIONS
from techport_notifications.store import (
    ErasedRow,
    NotificationItemRow,
    NotificationRow,
    NotificationsUnitOfWork,
    OrganisationInfoRow,
    RecipientRow,
    UnsubscribeRow,
    VacancyInfoRow,
)

SOURCE = "/notifications"


# --- what we need to know of people and vacancies -----------------------------------------------------------
async def _keep_recipient(uow: NotificationsUnitOfWork, who: Recipient, **fields: Any) -> None:
    row = await uow.notifications.recipient(who) or RecipientRow(kind=who.kind, recipient_id=who.id, **fields)
    for name, value in fields.items():
        setattr(row, name, value)
    uow.notifications.add(row)


async def _student(
    data: StudentData, uow: NotificationsUnitOfWork, context: Context, registration: bool
) -> None:
    repo = uow.notifications
    event_type = ce_type("student.registered" if registration else "student.updated")
    if await erasure_stands(repo, ErasedRow, data.student_id, event_type, context.origin.occurred_at):
        await uow.commit()
        return  # a late update does not bring an erased student back
    await _keep_recipient(
        uow,
        Recipient(STUDENT, data.student_id),
        name=data.given_name,
        email=str(data.email),
        language=data.preferred_language,
        email_consent=data.consent.email,
        level=data.level,
        programme=data.programme,
    )
    await uow.commit()


async def on_student_registered(
    event: StudentRegistered, uow: NotificationsUnitOfWork, context: Context
) -> None:
    await _student(event, uow, context, registration=True)


async def on_student_updated(event: StudentUpdated, uow: NotificationsUnitOfWork, context: Context) -> None:
    await _student(event, uow, context, registration=False)


async def on_student_erased(
    event: StudentErased, uow: NotificationsUnitOfWork, context: Context, keys: StudentKeys | None = None
) -> None:
    repo = uow.notifications
    await repo.forget_student(event.student_id)
    if await repo.get(ErasedRow, event.student_id) is None:
        repo.add(ErasedRow(student_id=event.student_id, erased_at=context.origin.occurred_at))
    if keys is not None:
        keys.forget(event.student_id)
    await uow.commit()


async def on_organisation(
    event: OrganisationRegistered | OrganisationUpdated, uow: NotificationsUnitOfWork, context: Context
) -> None:
    repo = uow.notifications
    info = await repo.get(OrganisationInfoRow, event.organisation_id) or OrganisationInfoRow(
        organisation_id=event.organisation_id, name=event.name
    )
    info.name = event.name
    repo.add(info)
    await _keep_recipient(
        uow,
        Recipient(ORGANISATION, event.organisation_id),
        name=event.name,
        email=str(event.email),
        language="nl",
        email_consent=True,
    )
    await uow.commit()


async def on_vacancy(
    event: VacancyPosted | VacancyUpdated, uow: NotificationsUnitOfWork, context: Context
) -> None:
    data: VacancyData = event
    repo = uow.notifications
    area = lookup(data.postcode)
    info = await repo.get(VacancyInfoRow, data.vacancy_id) or VacancyInfoRow(
        vacancy_id=data.vacancy_id, organisation_id=data.organisation_id, title=data.title, place=""
    )
    info.organisation_id, info.title, info.place = (
        data.organisation_id,
        data.title,
        area.place if area else "",
    )
    repo.add(info)
    organisation = await repo.get(OrganisationInfoRow, data.organisation_id)
    await _keep_recipient(
        uow,
        Recipient(VACANCY_CONTACT, data.vacancy_id),
        name=organisation.name if organisation else "",
        email=str(data.contact_email),
        language="nl",
        email_consent=True,
    )
    await uow.commit()


async def preload(uow: NotificationsUnitOfWork, events: list[Envelope]) -> None:
    """Read what a batch of student and match events will ask for, before its handlers run."""
    matches = [e.data for e in events if e.type == ce_type("match.found")]
    students = {m["student_id"] for m in matches if isinstance(m.get("student_id"), str)}
    # Students' own events: their erased markers and recipient rows.
    told = {
        student_id
        for e in events
        if e.type.startswith(STUDENT_TYPES) and isinstance(student_id := e.data.get("student_id"), str)
    }
    students |= told
    recipients = {Recipient(STUDENT, s) for s in students} | {
        Recipient(VACANCY_CONTACT, m["vacancy_id"]) for m in matches if isinstance(m.get("vacancy_id"), str)
    }
    subjects = {m["match_id"] for m in matches if isinstance(m.get("match_id"), str)}
    templates = {"student_matches", "vacancy_candidates"}
    await uow.notifications.preload(students, recipients, templates if recipients else set(), subjects)


# --- what to tell them --------------------------------------------------------------------------------------
async def on_match_found(
    event: MatchFound, uow: NotificationsUnitOfWork, context: Context, digest_seconds: float
) -> None:
    repo = uow.notifications
    if await repo.get(ErasedRow, event.student_id) is None:
        details = {
            "match_id": event.match_id,
            "vacancy_id": event.vacancy_id,
            "student_id": event.student_id,
            "skills": list(event.reasons.matched_skills),
            "distance_km": event.reasons.distance_km,
        }
        for who, template in (
            (Recipient(STUDENT, event.student_id), "student_matches"),
            (Recipient(VACANCY_CONTACT, event.vacancy_id), "vacancy_candidates"),
        ):
            await _enqueue(
                uow, who, template, event.match_id, details, event.student_id, digest_seconds, context
            )
    await uow.commit()


async def on_partnership_formed(
    event: PartnershipFormed, uow: NotificationsUnitOfWork, context: Context
) -> None:
    for side, partner in ((event.company_id, event.school_id), (event.school_id, event.company_id)):
        details = {"partner_id": partner, "partnership_id": event.partnership_id}
        who = Recipient(ORGANISATION, side)
        await _enqueue(uow, who, "partnership_formed", event.partnership_id, details, None, 0, context)
    await uow.commit()


async def _enqueue(
    uow: NotificationsUnitOfWork,
    who: Recipient,
    template: str,
    subject_id: str,
    details: dict[str, Any],
    student_id: str | None,
    delay_s: float,
    context: Context,
) -> None:
    repo = uow.notifications
    if await repo.has_item(who, subject_id):
        return  # this recipient hears of this match (or partnership) once
    digest = await repo.open_digest(who, template)
    if digest is None or await repo.item_count(digest.notification_id) >= MAX_DIGEST_ITEMS:
        notification_id = f"n-{uuid.uuid4().hex}"
        digest = NotificationRow(
            notification_id=notification_id,
            recipient_kind=who.kind,
            recipient_id=who.id,
            template=template,
            status="pending",
            due_at=now() + timedelta(seconds=delay_s),
            message_id=f"<{notification_id}@techport.nl>",
            created_at=now(),
        )
        repo.add(digest)
    item = NotificationItemRow(
        notification_id=digest.notification_id,
        recipient_kind=who.kind,
        recipient_id=who.id,
        subject_id=subject_id,
        about_ce_id=context.origin.causation_id or "",
        correlation_id=context.origin.correlation_id,
        details=details,
        student_id=student_id,
    )
    repo.add_item(item, digest)


# --- commands: unsubscribing, and the sender's claims and records -------------------------------------------
@dataclass(frozen=True)
class Unsubscribe:
    who: Recipient
    address: str  # the fingerprint the token was bound to


@dataclass(frozen=True)
class Resubscribe:
    who: Recipient
    address: str


@dataclass(frozen=True)
class RetryFailed:
    """Put failed notifications back on the schedule (after SMTP is fixed): they are sent at the next poll."""


@dataclass(frozen=True)
class ClaimDue:
    limit: int
    claim_s: float
    held: tuple[str, ...] = ()  # claimed by this sender before, not sent yet: renewed first


@dataclass(frozen=True)
class RecordOutcome:
    """What became of a claimed notification: sent, suppressed, failed, dropped, or retry (with backoff)."""

    notification_id: str
    outcome: str
    reason: str | None = None
    retry_in_s: float = 0.0


async def unsubscribe(command: Unsubscribe, uow: NotificationsUnitOfWork, context: Context) -> bool:
    """True when the token still fits the recipient's address (a token of an old address does nothing)."""
    repo = uow.notifications
    recipient = await repo.recipient(command.who)
    if recipient is not None and address_fingerprint(recipient.email) != command.address:
        return False
    row = await repo.unsubscribed(command.who) or UnsubscribeRow(
        kind=command.who.kind, recipient_id=command.who.id, address=command.address, unsubscribed_at=now()
    )
    row.address = command.address
    repo.add(row)
    await uow.commit()
    return True


async def resubscribe(command: Resubscribe, uow: NotificationsUnitOfWork, context: Context) -> bool:
    repo = uow.notifications
    row = await repo.unsubscribed(command.who)
    if row is not None and row.address == command.address:
        await repo.delete(row)
    await uow.commit()
    return True


async def retry_failed(command: RetryFailed, uow: NotificationsUnitOfWork, context: Context) -> int:
    rescheduled = await uow.notifications.retry_failed()
    await uow.commit()
    return rescheduled


@dataclass(frozen=True)
class Claimed:
    ids: list[str]
    backlog: int  # due after this claim and claimed by nobody


async def claim_due(command: ClaimDue, uow: NotificationsUnitOfWork, context: Context) -> Claimed:
    claimed = await uow.notifications.claim_due(command.limit, command.claim_s, command.held)
    backlog = await uow.notifications.due_count()
    await uow.commit()
    return Claimed(claimed, backlog)


@dataclass(frozen=True)
class RecordOutcomes:
    """What became of several notifications (a group sent together), recorded in one transaction."""

    outcomes: tuple[RecordOutcome, ...]


async def record_outcome(command: RecordOutcome, uow: NotificationsUnitOfWork, context: Context) -> None:
    await record_outcomes(RecordOutcomes((command,)), uow, context)


async def record_outcomes(command: RecordOutcomes, uow: NotificationsUnitOfWork, context: Context) -> None:
    await uow.notifications.preload_outcomes([outcome.notification_id for outcome in command.outcomes])
    finished = [(outcome.outcome, await _record(outcome, uow)) for outcome in command.outcomes]
    await uow.commit()
    for outcome, template in finished:
        if template is not None and outcome in ("sent", "suppressed", "failed"):
            NOTIFICATIONS.labels(outcome, template).inc()


async def _record(command: RecordOutcome, uow: NotificationsUnitOfWork) -> str | None:
    """Apply one outcome; the notification's template, or None when there was nothing left to record."""
    repo = uow.notifications
    notification: NotificationRow | None = await repo.get(NotificationRow, command.notification_id)
    if notification is None or notification.status not in ("pending", "sending"):
        return None  # already recorded (a retry of this record after the database came back)
    if command.outcome == "drop":
        await repo.delete(notification)
    elif command.outcome == "retry":
        notification.status = "pending"
        notification.attempts += 1
        notification.last_error = _error_text(command.reason)
        notification.due_at = now() + timedelta(seconds=command.retry_in_s)
        repo.add(notification)
    elif command.outcome == "wait":
        notification.status = "pending"
        notification.due_at = now() + timedelta(seconds=command.retry_in_s)
        repo.add(notification)
    else:
        await _finish(uow, notification, command.outcome, command.reason)
    return notification.template


def _error_text(reason: str | None) -> str:
    """A failure text as it is kept and told: bounded, and naming no address."""
    return trim(scrub(reason or "failed"), MAX_ERROR_CHARS)


async def _finish(
    uow: NotificationsUnitOfWork, notification: NotificationRow, outcome: str, reason: str | None
) -> None:
    items = await uow.notifications.items(notification.notification_id)
    notification.status, notification.finished_at = outcome, now()
    if outcome == "failed":
        notification.last_error = _error_text(reason)
    uow.notifications.add(notification)
    data: dict[str, Any] = {
        "notification_id": notification.notification_id,
        "channel": "email",
        "recipient_id": notification.recipient_id,
        "recipient_kind": notification.recipient_kind,
        "template": notification.template,
        "about": [item.about_ce_id for item in items],
    }
    if outcome == "failed":
        data["error"] = _error_text(reason)
    if outcome == "suppressed":
        data["reason"] = reason
    first = items[0] if items else None
    # The email's events carry the correlation id of the event it reports on (the first, for a digest).
    uow.emit(
        NOTIFICATIONS_TOPIC.name,
        Envelope(
            type=ce_type(f"notification.{outcome}"),
            source=SOURCE,
            subject=notification.recipient_id,
            data=data,
            correlationid=first.correlation_id if first else None,
            causationid=first.about_ce_id if first else None,
        ),
    )


HANDLERS: dict[type, Callable[..., Awaitable[Any]]] = {
    OrganisationRegistered: on_organisation,
    OrganisationUpdated: on_organisation,
    StudentRegistered: on_student_registered,
    StudentUpdated: on_student_updated,
    StudentErased: on_student_erased,
    VacancyPosted: on_vacancy,
    VacancyUpdated: on_vacancy,
    MatchFound: on_match_found,
    PartnershipFormed: on_partnership_formed,
    Unsubscribe: unsubscribe,
    Resubscribe: resubscribe,
    RetryFailed: retry_failed,
    ClaimDue: claim_due,
    RecordOutcome: record_outcome,
    RecordOutcomes: record_outcomes,
}
