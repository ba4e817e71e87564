"""The sender: claims what is due (a pass, at most NOTIFICATIONS_SEND_BATCH), writes the pass's emails on
reads made for all of them, sends them concurrently over kept SMTP connections (at most NOTIFICATIONS_SEND_
CONCURRENCY at once, at most NOTIFICATIONS_SEND_RATE a second), and records what became of them, a group
of sends in one transaction.

Every step from recipient to SMTP is inside one notification's error handling: an address that cannot be
used, a template that fails, a server that refuses for good, each makes that one notification failed with
its reason (`notification.failed`) and never holds up another. A send is claimed in the database before the
message leaves; when the database is unreachable after the SMTP server accepted it, the sender remembers that
and records it sent when the database is back, so it is not sent again. The window that remains: if the
process dies between the server's acceptance and that record, the claim lapses and the message is sent
again, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from techport_shared.db import aware, now
from techport_shared.envelope import Origin
from techport_shared.identity import service_identity
from techport_shared.logging import get_logger, scrub
from techport_shared.messagebus import Context, MessageBus
from techport_shared.skills import vocabulary

from techport_notifications.domain import (
    TEMPLATES,
    Recipient,
    Undeliverable,
    address_fingerprint,
    backoff_s,
    describe_match,
    mail_address,
    verdict,
)
from techport_notifications.handlers import ClaimDue, Claimed, RecordOutcome, RecordOutcomes
from techport_notifications.mailer import SmtpConnections, Unsubscribes, build_message, render
from techport_notifications.metrics import DIGEST_SIZE, DUE, SEND_RETRIES, SEND_SECONDS
from techport_notifications.settings import NotificationsSettings
from techport_notifications.store import (
    ErasedRow,
    NotificationItemRow,
    NotificationRow,
    NotificationsRepository,
    OrganisationInfoRow,
    VacancyInfoRow,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Ready:
    """A claimed notification written and ready to go."""

    notification_id: str
    message: EmailMessage
    attempts: int
    items: int


class PermanentFailure(Exception):
    """Sending this one again cannot help (a 5xx, an address the server cannot take)."""


def smtp_failure(exc: BaseException) -> tuple[bool, str]:
    """(permanent?, reason) of a failed send. 5xx replies and missing SMTPUTF8 are for good; the rest (4xx,
    connection trouble, timeouts, a login that fails while an operator fixes it) is tried again later."""
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return True, f"the mail server cannot take this address: {exc}"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [getattr(r, "code", 0) for r in exc.recipients]
        return all(500 <= c < 600 for c in codes), f"recipient refused: {codes}"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return False, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 500 <= exc.code < 600, f"{type(exc).__name__}: {exc.code} {exc.message}"
    return False, f"{type(exc).__name__}: {exc}"


class Sender:
    def __init__(
        self, bus: MessageBus[Any], settings: NotificationsSettings, unsubscribes: Unsubscribes
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.unsubscribes = unsubscribes
        self._stopping = False
        # Accepted by the SMTP server but not yet recorded as sent (the database was unreachable).
        self._accepted: set[str] = set()
        # Claimed by this sender, not yet written and sent: a database outage broke off the pass after the
        # claim. They stay claimed for NOTIFICATIONS_SENDING_CLAIM_S (ten minutes by default), so the next
        # pass takes them up again rather than leaving them to wait that long.
        self._held: set[str] = set()
        self._context = Context(service_identity("notifications"), Origin(None, None, now(), "sender"))
        self.smtp = SmtpConnections(settings.smtp)

    async def run(self) -> None:
        """Send what is due, forever; the schedule lives in the database."""
        self._stopping = False  # a service may be started again after a stop (tests, a restarted lifespan)
        try:
            await self._run()
        finally:
            self.smtp.close()

    async def _run(self) -> None:
        while not self._stopping:
            claimed, started = 0, time.monotonic()
            try:
                claimed = await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sending due notifications failed; will retry", error=scrub(repr(exc)))
            await asyncio.sleep(self._pause(claimed, time.monotonic() - started))

    def _pause(self, claimed: int, took_s: float) -> float:
        """Until the next pass. A full one leaves more due (a cohort's matches all come at once): the next
        goes as soon as NOTIFICATIONS_SEND_RATE allows, not a poll interval later."""
        if claimed < self.settings.send_batch:
            return self.settings.poll_interval_s
        rate = self.settings.send_rate
        return max(0.0, claimed / rate - took_s) if rate else 0.0

    def stop(self) -> None:
        self._stopping = True

    async def send_due(self) -> int:
        if self._accepted:  # accepted by the SMTP server earlier, not yet recorded: the database was away
            await self._record_group([RecordOutcome(i, "sent") for i in sorted(self._accepted)])
        # The consumers take turns with the claim and the writing: no item joins a digest being claimed.
        async with self.bus.lock:
            held = tuple(sorted(self._held))
            claim = ClaimDue(self.settings.send_batch, self.settings.sending_claim_s, held)
            claimed: Claimed = await self.bus.handle_holding_lock(claim, self._context)
            DUE.set(claimed.backlog)
            self._held = set(claimed.ids)
            prepared = await self._prepare_all(claimed.ids)
        self._held.clear()  # each one is delivered or recorded below
        # NOTIFICATIONS_SEND_CONCURRENCY at once; each group's outcomes recorded together once it is through
        # (a transaction a group, not one an email), before the next group goes.
        size = self.settings.send_concurrency
        for start in range(0, len(prepared), size):
            group = prepared[start : start + size]
            await self._record_group(list(await asyncio.gather(*(self._deliver(item) for item in group))))
        return len(claimed.ids)

    async def _prepare_all(self, notification_ids: list[str]) -> list[Ready | RecordOutcome]:
        """The emails of a pass, written in one transaction on reads made for all of them at once. Should one
        fail to be written, it and those after it are written one at a time, each in its own transaction
        and its own error handling (a failed statement leaves a PostgreSQL transaction unusable)."""
        prepared: dict[str, Ready | RecordOutcome] = {}
        try:
            async with self.bus.unit_of_work() as uow:
                await uow.notifications.preload_claimed(notification_ids)
                for notification_id in notification_ids:
                    prepared[notification_id] = await self._write(uow.notifications, notification_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_outage(exc):
                raise
        return [prepared.get(i) or await self._prepare(i) for i in notification_ids]

    async def _prepare(self, notification_id: str) -> Ready | RecordOutcome:
        """The email of one claimed notification, or what to record instead. Whatever goes wrong here is this
        notification's failure alone."""
        try:
            async with self.bus.unit_of_work() as uow:
                return await self._write(uow.notifications, notification_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_outage(exc):
                raise
            log.error(
                "a notification could not be written", notification_id=notification_id, error=scrub(repr(exc))
            )
            return RecordOutcome(notification_id, "failed", f"could not be written: {type(exc).__name__}")

    async def _write(self, repo: NotificationsRepository, notification_id: str) -> Ready | RecordOutcome:
        notification: NotificationRow | None = await repo.get(NotificationRow, notification_id)
        if notification is None:
            return RecordOutcome(notification_id, "drop")
        who = Recipient(TEMPLATES[notification.template], notification.recipient_id)
        items = await repo.items(notification_id)
        recipient = await repo.recipient(who)
        unsubscribed = await repo.unsubscribed(who)
        decided = verdict(
            has_items=bool(items),
            erased=who.kind == "student" and await repo.get(ErasedRow, who.id) is not None,
            known=recipient is not None,
            consent=bool(recipient and recipient.email_consent),
            unsubscribed=bool(
                recipient and unsubscribed and unsubscribed.address == address_fingerprint(recipient.email)
            ),
            created_at=aware(notification.created_at),
            now=now(),
        )
        if decided.action == "wait":
            return RecordOutcome(
                notification_id, "wait", retry_in_s=max(1.0, self.settings.poll_interval_s * 5)
            )
        if decided.action != "send":
            outcome = {"suppress": "suppressed", "fail": "failed", "drop": "drop"}[decided.action]
            return RecordOutcome(notification_id, outcome, decided.reason)
        assert recipient is not None
        try:
            address = mail_address(recipient.email)
        except Undeliverable as undeliverable:
            return RecordOutcome(notification_id, "failed", str(undeliverable))
        unsubscribe_url = self.unsubscribes.url(who, recipient.email, recipient.language)
        described = await self._describe(repo, notification.template, items, recipient.language)
        rendered = render(
            notification.template,
            recipient.language,
            recipient.name,
            described,
            unsubscribe_url,
            self.settings.portal_url,
        )
        message = build_message(
            self.settings.smtp.sender,
            recipient.name,
            address,
            notification.message_id,
            rendered,
            unsubscribe_url,
            items[0].correlation_id,
        )
        return Ready(notification_id, message, notification.attempts, len(items))

    async def _describe(
        self, repo: NotificationsRepository, template: str, items: list[NotificationItemRow], language: str
    ) -> list[dict[str, Any]]:
        vocab = vocabulary()
        described = []
        for item in items:
            details = item.details
            if template == "partnership_formed":
                partner = await repo.get(OrganisationInfoRow, details["partner_id"])
                name = partner.name if partner else details["partner_id"]
                described.append({"partner": name, "partnership_id": details["partnership_id"]})
                continue
            vacancy = await repo.get(VacancyInfoRow, details["vacancy_id"])
            company = await repo.get(OrganisationInfoRow, vacancy.organisation_id) if vacancy else None
            candidate = None
            if template == "vacancy_candidates":
                student = await repo.recipient(Recipient("student", details["student_id"]))
                if student is not None:
                    candidate = {"name": student.name, "level": student.level, "programme": student.programme}
            entry = describe_match(
                template,
                details,
                {"title": vacancy.title, "place": vacancy.place, "organisation_id": vacancy.organisation_id}
                if vacancy
                else None,
                company.name if company else None,
                candidate,
                lambda code: vocab.label(code, language),
            )
            if entry is not None:
                described.append(entry)
        return described

    async def _deliver(self, item: Ready | RecordOutcome) -> RecordOutcome:
        """Send one email; what to record of it."""
        if isinstance(item, RecordOutcome):
            return item
        started = time.perf_counter()
        try:
            await self.smtp.send(item.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            permanent, reason = smtp_failure(exc)
            attempts = item.attempts + 1
            if permanent or attempts >= self.settings.send_attempts:
                return RecordOutcome(item.notification_id, "failed", reason)
            SEND_RETRIES.inc()
            wait = backoff_s(attempts, self.settings.backoff_initial_s, self.settings.backoff_max_s)
            log.warning(
                "email not accepted; will retry", notification_id=item.notification_id, retry_in_s=wait
            )
            return RecordOutcome(item.notification_id, "retry", reason, wait)
        self._accepted.add(item.notification_id)
        SEND_SECONDS.observe(time.perf_counter() - started)
        DIGEST_SIZE.observe(item.items)
        return RecordOutcome(item.notification_id, "sent")

    async def _record_group(self, outcomes: list[RecordOutcome]) -> None:
        """Record a group's outcomes in one transaction. Should that fail for anything but an outage, they
        are recorded one at a time, so that what goes wrong with one record is that one's alone."""
        try:
            await self.bus.handle(RecordOutcomes(tuple(outcomes)), self._context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if len(outcomes) > 1 and not _is_outage(exc):
                for outcome in outcomes:
                    if await self._record(outcome) and outcome.outcome == "sent":
                        self._accepted.discard(outcome.notification_id)
                return
            # Recorded at the next pass (a sent one from `_accepted`; the others when their claim lapses).
            ids = [outcome.notification_id for outcome in outcomes]
            log.warning("recording deliveries failed", notification_ids=ids, error=scrub(repr(exc)))
            return
        self._accepted.difference_update(o.notification_id for o in outcomes if o.outcome == "sent")

    async def _record(self, outcome: RecordOutcome) -> bool:
        try:
            await self.bus.handle(outcome, self._context)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Recorded at the next poll (a sent one from `_accepted`; the others when their claim lapses).
            log.warning(
                "recording a delivery failed", notification_id=outcome.notification_id, error=scrub(repr(exc))
            )
            return False


def _is_outage(exc: BaseException) -> bool:
    from techport_shared.consumer import is_transient

    return is_transient(exc)
