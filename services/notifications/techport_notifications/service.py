"""Notifications' use cases: keep the recipients, collect what to tell them into digests scheduled in the
database, and send each digest once over SMTP, with retries, suppression and erasure.

One email per (recipient, match): an item is recorded once per recipient and subject (match or partnership),
and a digest is a row with a due time, so a restart neither loses nor repeats it. A send is claimed in the
database before the message leaves; when the database is unreachable after the SMTP server has accepted it,
the process remembers that and records it sent when the database is back, so it is not sent again. The
window that remains: if the process dies between the server's acceptance and that record, the claim lapses
and the message is sent again, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

from techport_shared.db import SessionFactory
from techport_shared.envelope import Envelope
from techport_shared.events import (
    MatchFound,
    OrganisationData,
    PartnershipFormed,
    StudentData,
    StudentErased,
    VacancyData,
    ce_type,
)
from techport_shared.logging import get_logger
from techport_shared.postcodes import lookup
from techport_shared.skills import vocabulary
from techport_shared.topics import NOTIFICATIONS as NOTIFICATIONS_TOPIC
from techport_shared.uow import UnitOfWork

from techport_notifications.mailer import Unsubscribes, build_message, render, send
from techport_notifications.metrics import DIGEST_SIZE, NOTIFICATIONS, SEND_RETRIES, SEND_SECONDS
from techport_notifications.settings import NotificationsSettings
from techport_notifications.store import (
    SENDABLE,
    ErasedRow,
    NotificationItemRow,
    NotificationRow,
    NotificationsRepository,
    OrganisationInfoRow,
    RecipientRow,
    UnsubscribeRow,
    VacancyInfoRow,
    aware,
    now,
)

log = get_logger(__name__)
SOURCE = "/notifications"
# A match can arrive before the student it is about (they come on different topics): wait this long for it.
UNKNOWN_RECIPIENT_GRACE = timedelta(hours=1)


def vacancy_recipient(vacancy_id: str) -> str:
    return f"vacancy:{vacancy_id}"


class Notifications:
    def __init__(self, settings: NotificationsSettings, lock: asyncio.Lock | None = None) -> None:
        self.settings = settings
        self.lock = lock or asyncio.Lock()
        self.unsubscribes = Unsubscribes(settings.unsubscribe_secret.get_secret_value(), settings.public_url)
        self._stopping = False
        # Accepted by the SMTP server but not yet recorded as sent (the database was unreachable).
        self._accepted: set[str] = set()

    # --- what we need to know of people and vacancies -----------------------------------------------------
    async def _upsert_recipient(
        self,
        repo: NotificationsRepository,
        recipient_id: str,
        kind: str,
        name: str,
        email: str,
        language: str,
        consent: bool,
    ) -> None:
        row = await repo.get(RecipientRow, recipient_id) or RecipientRow(
            recipient_id=recipient_id,
            kind=kind,
            name=name,
            email=email,
            language=language,
            email_consent=consent,
        )
        row.kind, row.name, row.email, row.language, row.email_consent = kind, name, email, language, consent
        repo.add(row)

    async def on_student(self, event: Envelope, data: StudentData, uow: UnitOfWork) -> None:
        repo = NotificationsRepository(uow.session)
        erased = await repo.get(ErasedRow, data.student_id)
        if erased is not None:
            if event.type != ce_type("student.registered") or event.time <= aware(erased.erased_at):
                return  # a late update does not bring an erased student back
            await uow.session.delete(erased)
        await self._upsert_recipient(
            repo,
            data.student_id,
            "student",
            data.given_name,
            str(data.email),
            data.preferred_language,
            data.consent.email,
        )

    async def on_student_erased(self, event: Envelope, data: StudentErased, uow: UnitOfWork) -> None:
        repo = NotificationsRepository(uow.session)
        await repo.forget_student(data.student_id)
        if await repo.get(ErasedRow, data.student_id) is None:
            repo.add(ErasedRow(student_id=data.student_id, erased_at=event.time))

    async def on_organisation(self, event: Envelope, data: OrganisationData, uow: UnitOfWork) -> None:
        repo = NotificationsRepository(uow.session)
        info = await repo.get(OrganisationInfoRow, data.organisation_id) or OrganisationInfoRow(
            organisation_id=data.organisation_id, name=data.name
        )
        info.name = data.name
        repo.add(info)
        await self._upsert_recipient(
            repo, data.organisation_id, "organisation", data.name, str(data.email), "nl", True
        )

    async def on_vacancy(self, event: Envelope, data: VacancyData, uow: UnitOfWork) -> None:
        repo = NotificationsRepository(uow.session)
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
        await self._upsert_recipient(
            repo,
            vacancy_recipient(data.vacancy_id),
            "vacancy_contact",
            organisation.name if organisation else "",
            str(data.contact_email),
            "nl",
            True,
        )

    # --- what to tell them ----------------------------------------------------------------------------------
    async def on_match_found(self, event: Envelope, data: MatchFound, uow: UnitOfWork) -> None:
        repo = NotificationsRepository(uow.session)
        if await repo.get(ErasedRow, data.student_id) is not None:
            return
        details = {
            "vacancy_id": data.vacancy_id,
            "student_id": data.student_id,
            "skills": list(data.reasons.matched_skills),
            "distance_km": data.reasons.distance_km,
        }
        delay = self.settings.digest_seconds
        await self._enqueue(
            repo, data.student_id, "student_matches", data.match_id, event.id, details, data.student_id, delay
        )
        await self._enqueue(
            repo,
            vacancy_recipient(data.vacancy_id),
            "vacancy_candidates",
            data.match_id,
            event.id,
            details,
            data.student_id,
            delay,
        )

    async def on_partnership_formed(self, event: Envelope, data: PartnershipFormed, uow: UnitOfWork) -> None:
        repo = NotificationsRepository(uow.session)
        for side, partner in ((data.company_id, data.school_id), (data.school_id, data.company_id)):
            details = {"partner_id": partner, "partnership_id": data.partnership_id}
            await self._enqueue(
                repo, side, "partnership_formed", data.partnership_id, event.id, details, None, 0
            )

    async def _enqueue(
        self,
        repo: NotificationsRepository,
        recipient_id: str,
        template: str,
        subject_id: str,
        about: str,
        details: dict[str, Any],
        student_id: str | None,
        delay_s: float,
    ) -> None:
        if await repo.has_item(recipient_id, subject_id):
            return  # this recipient hears of this match (or partnership) once
        digest = await repo.open_digest(recipient_id, template)
        if digest is None:
            notification_id = f"n-{uuid.uuid4().hex}"
            digest = NotificationRow(
                notification_id=notification_id,
                recipient_id=recipient_id,
                template=template,
                status="pending",
                due_at=now() + timedelta(seconds=delay_s),
                message_id=f"<{notification_id}@techport.nl>",
                created_at=now(),
            )
            repo.add(digest)
        repo.add(
            NotificationItemRow(
                notification_id=digest.notification_id,
                recipient_id=recipient_id,
                subject_id=subject_id,
                about_ce_id=about,
                details=details,
                student_id=student_id,
            )
        )

    # --- sending ----------------------------------------------------------------------------------------
    async def run(self, unit_of_work: Any) -> None:
        """Send what is due, forever; the schedule lives in the database."""
        self._stopping = False  # a service may be started again after a stop (tests, a restarted lifespan)
        while not self._stopping:
            try:
                await self.send_due(unit_of_work)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sending due notifications failed; will retry", error=repr(exc))
            await asyncio.sleep(self.settings.poll_interval_s)

    def stop(self) -> None:
        self._stopping = True

    async def send_due(self, unit_of_work: Any) -> int:
        # Across replicas (PostgreSQL) a digest is claimed under its row lock and marked sending before it
        # leaves, so it is neither sent twice nor grows while it is sent; within one process the lock also
        # keeps consumers waiting (SQLite has no row locks).
        for notification_id in sorted(self._accepted):
            async with self.lock, unit_of_work() as uow:
                await self._record_accepted(uow, notification_id)
        async with self.lock, unit_of_work() as uow:
            due = await NotificationsRepository(uow.session).due()
        for notification_id in due:
            # Consumers wait while a digest is sent, so no item joins a digest being sent.
            async with self.lock, unit_of_work() as uow:
                await self._deliver(uow, notification_id)
        return len(due)

    async def _deliver(self, uow: UnitOfWork, notification_id: str) -> None:
        repo = NotificationsRepository(uow.session)
        notification = await repo.claim_for_sending(notification_id)
        if notification is None or notification.status not in SENDABLE or aware(notification.due_at) > now():
            return
        if notification.status == "sending":
            log.warning("a claimed send lapsed; sending again", notification_id=notification_id)
        items = await repo.items(notification_id)
        recipient: RecipientRow | None = await repo.get(RecipientRow, notification.recipient_id)
        if not items or await repo.get(ErasedRow, notification.recipient_id) is not None:
            await uow.session.delete(notification)
            await uow.commit()
            return
        if recipient is None:
            if now() - aware(notification.created_at) > UNKNOWN_RECIPIENT_GRACE:
                await self._finish(uow, notification, items, "failed", error="unknown recipient")
            else:
                notification.due_at = now() + timedelta(seconds=max(1.0, self.settings.poll_interval_s * 5))
                repo.add(notification)
                await uow.commit()
            return
        if not recipient.email_consent or await repo.get(UnsubscribeRow, recipient.recipient_id) is not None:
            reason = "unsubscribed" if recipient.email_consent else "no email consent"
            await self._finish(uow, notification, items, "suppressed", reason=reason)
            return
        message = build_message(
            self.settings.smtp.sender,
            recipient.name,
            recipient.email,
            notification.message_id,
            render(
                notification.template,
                recipient.language,
                recipient.name,
                await self._describe(repo, notification.template, items, recipient.language),
                self.unsubscribes.url(recipient.recipient_id),
            ),
            self.unsubscribes.url(recipient.recipient_id),
        )
        # Claim the send before the message leaves: other replicas leave a claimed send alone until the claim
        # lapses, so one accepted while the database is unreachable is not sent twice.
        notification.status = "sending"
        notification.due_at = now() + timedelta(seconds=self.settings.sending_claim_s)
        repo.add(notification)
        await uow.commit()
        started = time.perf_counter()
        try:
            await send(self.settings.smtp, message)
        except Exception as exc:
            notification.status = "pending"
            notification.attempts += 1
            notification.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            if notification.attempts >= self.settings.send_attempts:
                await self._finish(uow, notification, items, "failed", error=notification.last_error)
                return
            SEND_RETRIES.inc()
            backoff = min(
                self.settings.backoff_max_s,
                self.settings.backoff_initial_s * 2 ** (notification.attempts - 1),
            )
            notification.due_at = now() + timedelta(seconds=backoff)
            repo.add(notification)
            await uow.commit()
            log.warning("email not accepted; will retry", notification_id=notification_id, retry_in_s=backoff)
            return
        self._accepted.add(notification_id)
        SEND_SECONDS.observe(time.perf_counter() - started)
        DIGEST_SIZE.observe(len(items))
        await self._finish(uow, notification, items, "sent")
        self._accepted.discard(notification_id)

    async def _record_accepted(self, uow: UnitOfWork, notification_id: str) -> None:
        """Record as sent what the SMTP server accepted while the database was unreachable."""
        repo = NotificationsRepository(uow.session)
        notification = await repo.claim_for_sending(notification_id)
        if notification is None:
            if await repo.get(NotificationRow, notification_id) is not None:
                return  # another replica holds it (its claim lapsed): look again at the next poll
        elif notification.status == "sending":
            items = await repo.items(notification_id)
            await self._finish(uow, notification, items, "sent")
        self._accepted.discard(notification_id)

    async def _describe(
        self, repo: NotificationsRepository, template: str, items: list[NotificationItemRow], language: str
    ) -> list[dict[str, Any]]:
        vocab = vocabulary()
        described = []
        for item in items:
            details = item.details
            skills = [vocab.label(code, language) for code in details.get("skills", [])]
            if template == "partnership_formed":
                partner = await repo.get(OrganisationInfoRow, details["partner_id"])
                described.append({"partner": partner.name if partner else details["partner_id"]})
                continue
            vacancy = await repo.get(VacancyInfoRow, details["vacancy_id"])
            company = await repo.get(OrganisationInfoRow, vacancy.organisation_id) if vacancy else None
            entry = {
                "title": vacancy.title if vacancy else details["vacancy_id"],
                "company": company.name if company else (vacancy.organisation_id if vacancy else ""),
                "place": vacancy.place if vacancy else "",
                "distance_km": details.get("distance_km"),
                "skills": skills,
            }
            if template == "vacancy_candidates":
                student = await repo.get(RecipientRow, details["student_id"])
                if student is None:
                    continue
                entry["candidate"] = student.name
            described.append(entry)
        return described

    async def _finish(
        self,
        uow: UnitOfWork,
        notification: NotificationRow,
        items: list[NotificationItemRow],
        outcome: str,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        notification.status, notification.finished_at = outcome, now()
        if error:
            notification.last_error = error
        uow.session.add(notification)
        data: dict[str, Any] = {
            "notification_id": notification.notification_id,
            "channel": "email",
            "recipient_id": notification.recipient_id,
            "template": notification.template,
            "about": [item.about_ce_id for item in items],
        }
        if outcome == "failed":
            data["error"] = error or "failed"
        if outcome == "suppressed":
            data["reason"] = reason
        uow.emit(
            NOTIFICATIONS_TOPIC.name,
            Envelope(
                type=ce_type(f"notification.{outcome}"),
                source=SOURCE,
                subject=notification.recipient_id,
                data=data,
                causationid=items[0].about_ce_id if items else None,
            ),
        )
        await uow.commit()
        NOTIFICATIONS.labels(outcome, notification.template).inc()

    # --- operations -----------------------------------------------------------------------------------------
    async def unsubscribe(self, uow: UnitOfWork, token: str) -> str | None:
        recipient_id = self.unsubscribes.recipient(token)
        if recipient_id is None:
            return None
        repo = NotificationsRepository(uow.session)
        if await repo.get(UnsubscribeRow, recipient_id) is None:
            repo.add(UnsubscribeRow(recipient_id=recipient_id, unsubscribed_at=now()))
        await uow.commit()
        return recipient_id


async def retry_failed(sessions: SessionFactory) -> int:
    """Put failed notifications back on the schedule (after SMTP is fixed): they are sent at the next poll."""
    async with sessions() as session:
        repo = NotificationsRepository(session)
        failed = await repo.failed()
        for notification in failed:
            notification.status, notification.attempts, notification.due_at = "pending", 0, now()
            notification.finished_at = None
            session.add(notification)
        await session.commit()
        return len(failed)
