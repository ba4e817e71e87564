"""Notifications' database: the recipients it needs (typed: kind and id; names, address, language, consent,
and of a student what a company may read: level and programme), what it must know to write about a vacancy,
the notifications with their digest schedule (the delivery log), the items each reports on, unsubscribes,
erased students, and the outbox and processed-messages tables. `NotificationsUnitOfWork` gives handlers the
repository; nothing else sees a session."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col
from techport_shared.db import HeldRows, RowInit, json_field, now, utc_field
from techport_shared.messaging import messaging_tables
from techport_shared.uow import UnitOfWork

from techport_notifications.domain import STUDENT, Recipient


class NotificationsTable(RowInit, SQLModel, registry=registry()):
    """Base of notifications' tables: their own MetaData, so only they go into notifications' database."""


class RecipientRow(NotificationsTable, table=True):
    """A student, an organisation, or a vacancy's contact: (kind, recipient_id)."""

    __tablename__ = "recipients"
    __table_args__ = (PrimaryKeyConstraint("kind", "recipient_id", name="pk_recipients"),)
    kind: str = Field(max_length=20)
    recipient_id: str = Field(max_length=64)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    language: str = Field(max_length=2)
    email_consent: bool
    # Of a student, what a company's contact may read in its candidates' email (contract section 5).
    level: str | None = Field(default=None, max_length=20)
    programme: str | None = Field(default=None, max_length=200)


class VacancyInfoRow(NotificationsTable, table=True):
    __tablename__ = "vacancies"
    vacancy_id: str = Field(primary_key=True, max_length=64)
    organisation_id: str = Field(max_length=64)
    title: str = Field(max_length=200)
    place: str = Field(max_length=200)


class OrganisationInfoRow(NotificationsTable, table=True):
    __tablename__ = "organisations"
    organisation_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)


class UnsubscribeRow(NotificationsTable, table=True):
    """A recipient that asked for no more email, at the address it had (a new address is asked again)."""

    __tablename__ = "unsubscribes"
    __table_args__ = (PrimaryKeyConstraint("kind", "recipient_id", name="pk_unsubscribes"),)
    kind: str = Field(max_length=20)
    recipient_id: str = Field(max_length=64)
    address: str = Field(max_length=32)  # domain.address_fingerprint of the address it was sent to
    unsubscribed_at: datetime = utc_field()


class ErasedRow(NotificationsTable, table=True):
    __tablename__ = "erased_students"
    student_id: str = Field(primary_key=True, max_length=64)
    erased_at: datetime = utc_field()


class NotificationRow(NotificationsTable, table=True):
    """One email to be sent (or suppressed, or failed): the delivery log. `due_at` is the digest schedule."""

    __tablename__ = "notifications"
    notification_id: str = Field(primary_key=True, max_length=64)
    recipient_kind: str = Field(max_length=20)
    recipient_id: str = Field(max_length=64, index=True)
    template: str = Field(max_length=40)
    status: str = Field(max_length=12, index=True)  # pending, sending, sent, suppressed, failed
    due_at: datetime = utc_field()  # when pending: when to send; when sending: when the claim lapses
    attempts: int = 0
    last_error: str | None = None
    message_id: str = Field(max_length=200)
    created_at: datetime = utc_field()
    finished_at: datetime | None = utc_field(nullable=True)


class NotificationItemRow(NotificationsTable, table=True):
    """What a notification reports on. (recipient, subject) is unique: one email per recipient and match."""

    __tablename__ = "notification_items"
    __table_args__ = (
        UniqueConstraint("recipient_kind", "recipient_id", "subject_id", name="uq_items_recipient_subject"),
    )
    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(max_length=64, index=True)
    recipient_kind: str = Field(max_length=20)
    recipient_id: str = Field(max_length=64)
    subject_id: str = Field(max_length=80, index=True)  # the match id or partnership id
    student_id: str | None = Field(default=None, max_length=64, index=True)  # whom the item is about
    about_ce_id: str = Field(max_length=200)
    correlation_id: str | None = Field(default=None, max_length=200)  # of the event it reports on
    details: dict[str, Any] = json_field()


metadata = NotificationsTable.metadata
tables = messaging_tables(metadata)

# "sending" is claimed: an SMTP server may have accepted it, so only a lapsed claim is sent again.
SENDABLE = ("pending", "sending")


def _due(moment: datetime) -> tuple[Any, ...]:
    """A notification a sender may claim at `moment`: pending, or a send whose claim has lapsed."""
    return (col(NotificationRow.status).in_(SENDABLE), col(NotificationRow.due_at) <= moment)


class NotificationsRepository:
    def __init__(self, session: AsyncSession, rows: HeldRows) -> None:
        self.session = session
        self.rows = rows
        # What this transaction knows of digests, so a batch of matches asks once per recipient: the open
        # digest of (kind, id, template) (None: none is open), the items of each digest, the items recorded.
        self._digests: dict[tuple[str, str, str], NotificationRow | None] = {}
        self._counts: dict[str, int] = {}
        self._items: set[tuple[str, str, str]] = set()
        self._subjects: set[str] = set()  # subjects whose items are all in `_items`
        self._claimed_items: dict[str, list[NotificationItemRow]] = {}  # read ahead by `preload_outcomes`

    def forget(self) -> None:
        """The transaction rolled back: what it knew of digests may be undone."""
        self._digests.clear()
        self._counts.clear()
        self._items.clear()
        self._subjects.clear()
        self._claimed_items.clear()

    async def get(self, model: type[Any], *key: Any) -> Any:
        return await self.rows.get(model, key if len(key) > 1 else key[0])

    def add(self, row: Any) -> None:
        self.rows.add(row)

    async def delete(self, row: Any) -> None:
        await self.rows.delete(row)

    async def recipient(self, who: Recipient) -> RecipientRow | None:
        row: RecipientRow | None = await self.rows.get(RecipientRow, (who.kind, who.id))
        return row

    async def unsubscribed(self, who: Recipient) -> UnsubscribeRow | None:
        row: UnsubscribeRow | None = await self.rows.get(UnsubscribeRow, (who.kind, who.id))
        return row

    async def preload(
        self, students: set[str], recipients: set[Recipient], templates: set[str], subjects: set[str]
    ) -> None:
        """A batch's reads in a few queries: erased students, its recipients, the items already recorded for
        its subjects, and its recipients' open digests with their item counts (locked, as `open_digest` locks
        one)."""
        await self.rows.load(ErasedRow, students)
        await self.rows.load(RecipientRow, [(who.kind, who.id) for who in recipients])
        if subjects:
            found = await self.session.execute(
                select(
                    col(NotificationItemRow.recipient_kind),
                    col(NotificationItemRow.recipient_id),
                    col(NotificationItemRow.subject_id),
                ).where(col(NotificationItemRow.subject_id).in_(subjects))
            )
            self._items.update((k, i, subject) for k, i, subject in found)
            self._subjects |= subjects
        if not recipients:
            return
        ids = {who.id for who in recipients}
        open_digests = await self.session.scalars(
            select(NotificationRow)
            .where(
                col(NotificationRow.recipient_id).in_(ids),
                col(NotificationRow.template).in_(templates),
                col(NotificationRow.status) == "pending",
                col(NotificationRow.attempts) == 0,
            )
            .order_by(col(NotificationRow.notification_id))
            .with_for_update()
        )
        newest: dict[tuple[str, str, str], NotificationRow] = {}
        for row in open_digests:
            key = (row.recipient_kind, row.recipient_id, row.template)
            if key not in newest or row.created_at > newest[key].created_at:
                newest[key] = row
        for who in recipients:
            for template in templates:
                self._digests[(who.kind, who.id, template)] = newest.get((who.kind, who.id, template))
        digest_ids = [row.notification_id for row in newest.values()]
        self._counts.update({notification_id: 0 for notification_id in digest_ids})
        if digest_ids:
            counted = await self.session.execute(
                select(col(NotificationItemRow.notification_id), func.count())
                .where(col(NotificationItemRow.notification_id).in_(digest_ids))
                .group_by(col(NotificationItemRow.notification_id))
            )
            self._counts.update({notification_id: int(n) for notification_id, n in counted})

    async def open_digest(self, who: Recipient, template: str) -> NotificationRow | None:
        """The pending notification still collecting items for this recipient, if any.

        Locked (PostgreSQL): while another replica claims this digest we wait, and then see it sending and
        start a new one, so no item joins a digest already on its way."""
        key = (who.kind, who.id, template)
        if key not in self._digests:
            self._digests[key] = await self.session.scalar(
                select(NotificationRow)
                .where(
                    col(NotificationRow.recipient_kind) == who.kind,
                    col(NotificationRow.recipient_id) == who.id,
                    col(NotificationRow.template) == template,
                    col(NotificationRow.status) == "pending",
                    col(NotificationRow.attempts) == 0,
                )
                .order_by(col(NotificationRow.created_at).desc())
                .limit(1)
                .with_for_update()
            )
        return self._digests[key]

    async def item_count(self, notification_id: str) -> int:
        if notification_id not in self._counts:
            counted = await self.session.scalar(
                select(func.count()).where(col(NotificationItemRow.notification_id) == notification_id)
            )
            self._counts[notification_id] = int(counted or 0)
        return self._counts[notification_id]

    async def has_item(self, who: Recipient, subject_id: str) -> bool:
        if (who.kind, who.id, subject_id) in self._items:
            return True
        if subject_id in self._subjects:
            return False
        found = await self.session.scalar(
            select(col(NotificationItemRow.id)).where(
                col(NotificationItemRow.recipient_kind) == who.kind,
                col(NotificationItemRow.recipient_id) == who.id,
                col(NotificationItemRow.subject_id) == subject_id,
            )
        )
        return found is not None

    def add_item(self, item: NotificationItemRow, digest: NotificationRow) -> None:
        """An item joins a digest (made now, or open): what this transaction knows follows."""
        self.rows.add(item)
        self._items.add((item.recipient_kind, item.recipient_id, item.subject_id))
        self._digests[(digest.recipient_kind, digest.recipient_id, digest.template)] = digest
        self._counts[digest.notification_id] = self._counts.get(digest.notification_id, 0) + 1

    async def items(self, notification_id: str) -> list[NotificationItemRow]:
        """What the notification still reports on: items about an erased student are left out."""
        rows = self._claimed_items.get(notification_id)
        if rows is None:
            rows = (await self._read_items([notification_id]))[notification_id]
        return [item for item in rows if not item.details.get("erased")]

    async def _read_items(self, notification_ids: list[str]) -> dict[str, list[NotificationItemRow]]:
        """The items of these notifications, each's in the order they were recorded."""
        if not notification_ids:
            return {}
        found = await self.session.scalars(
            select(NotificationItemRow)
            .where(col(NotificationItemRow.notification_id).in_(notification_ids))
            .order_by(col(NotificationItemRow.id))
        )
        items: dict[str, list[NotificationItemRow]] = {i: [] for i in notification_ids}
        for item in found:
            items[item.notification_id].append(item)
        return items

    async def preload_outcomes(self, notification_ids: list[str]) -> None:
        """The notifications and their items, in a query each: what recording their outcomes reads."""
        await self.rows.load(NotificationRow, notification_ids)
        self._claimed_items.update(await self._read_items(notification_ids))

    async def preload_claimed(self, notification_ids: list[str]) -> None:
        """What writing a pass's claimed emails reads, in a query per table rather than a few per email: the
        notifications, their items, their recipients (and whether they unsubscribed or were erased), and the
        vacancies, organisations and candidates their items name."""
        await self.preload_outcomes(notification_ids)
        notifications = [n for i in notification_ids if (n := await self.rows.get(NotificationRow, i))]
        details = [item.details for items in self._claimed_items.values() for item in items]
        addressed = {(n.recipient_kind, n.recipient_id) for n in notifications}
        candidates = {(STUDENT, d["student_id"]) for d in details if isinstance(d.get("student_id"), str)}
        recipients = addressed | candidates
        await self.rows.load(RecipientRow, recipients)
        await self.rows.load(UnsubscribeRow, addressed)
        await self.rows.load(ErasedRow, {i for kind, i in recipients if kind == STUDENT})
        vacancies = {d["vacancy_id"] for d in details if isinstance(d.get("vacancy_id"), str)}
        await self.rows.load(VacancyInfoRow, vacancies)
        organisations = {d["partner_id"] for d in details if isinstance(d.get("partner_id"), str)}
        organisations |= {
            v.organisation_id for i in vacancies if (v := await self.rows.get(VacancyInfoRow, i)) is not None
        }
        await self.rows.load(OrganisationInfoRow, organisations)

    async def claim_due(self, limit: int, claim_s: float, held: Sequence[str] = ()) -> list[str]:
        """Claim what is due (pending, or a send whose claim lapsed): marked `sending` until the claim lapses,
        so two senders never take the same one. Each claim is a conditional update (still sendable, still
        due), which holds on SQLite too, where no row is locked. `held`: what this sender claimed before and
        has not sent yet; those still `sending` have their claims renewed and come first."""
        moment = now()
        until = moment + timedelta(seconds=claim_s)
        renewed = [i for i in held if await self._take(i, until, col(NotificationRow.status) == "sending")]
        due = list(
            await self.session.scalars(
                select(col(NotificationRow.notification_id))
                .where(*_due(moment))
                .order_by(col(NotificationRow.due_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        return renewed + [i for i in due if await self._take(i, until, *_due(moment))]

    async def due_count(self) -> int:
        """How many notifications are due and claimed by nobody: what the senders have still to do."""
        count = select(func.count()).select_from(NotificationRow).where(*_due(now()))
        return int(await self.session.scalar(count) or 0)

    async def _take(self, notification_id: str, until: datetime, *still: Any) -> bool:
        """Mark one notification `sending` until `until`, if it still meets `still` (a conditional update)."""
        result: Any = await self.session.execute(
            update(NotificationRow)
            .where(col(NotificationRow.notification_id) == notification_id, *still)
            .values(status="sending", due_at=until)
        )
        return bool(result.rowcount == 1)

    async def claimed(self, notification_id: str) -> NotificationRow | None:
        """A notification this sender claimed, locked until commit; None if it is gone or another holds it."""
        return await self.session.scalar(
            select(NotificationRow)
            .where(col(NotificationRow.notification_id) == notification_id)
            .with_for_update(skip_locked=True)
        )

    async def log(self, recipient_id: str, kind: str | None) -> list[NotificationRow]:
        query = select(NotificationRow).where(col(NotificationRow.recipient_id) == recipient_id)
        if kind is not None:
            query = query.where(col(NotificationRow.recipient_kind) == kind)
        return list(await self.session.scalars(query.order_by(col(NotificationRow.created_at))))

    async def retry_failed(self) -> int:
        """Put failed notifications back on the schedule: they are sent at the next poll."""
        result: Any = await self.session.execute(
            update(NotificationRow)
            .where(col(NotificationRow.status) == "failed")
            .values(status="pending", attempts=0, due_at=now(), finished_at=None)
        )
        return int(result.rowcount or 0)

    async def export_student(self, student_id: str) -> dict[str, Any]:
        """Everything kept about a student: as a recipient, its mail and what others' mail said of it."""
        who = Recipient(STUDENT, student_id)
        recipient = await self.recipient(who)
        unsubscribed = await self.unsubscribed(who)
        mine = (col(NotificationItemRow.recipient_kind) == STUDENT) & (
            col(NotificationItemRow.recipient_id) == student_id
        )
        about = await self.session.scalars(
            select(NotificationItemRow).where(mine | (col(NotificationItemRow.student_id) == student_id))
        )
        return {
            "recipient": None if recipient is None else recipient.model_dump(mode="json"),
            "unsubscribed": None if unsubscribed is None else unsubscribed.unsubscribed_at.isoformat(),
            "notifications": [n.model_dump(mode="json") for n in await self.log(student_id, STUDENT)],
            "items": [i.model_dump(mode="json") for i in about],
            "erased": await self.get(ErasedRow, student_id) is not None,
        }

    async def forget_student(self, student_id: str) -> None:
        """Erasure: the student's recipient data, pending mail and what it would have said, gone."""
        await self.session.execute(
            delete(RecipientRow).where(
                col(RecipientRow.kind) == STUDENT, col(RecipientRow.recipient_id) == student_id
            )
        )
        await self.session.execute(
            delete(UnsubscribeRow).where(
                col(UnsubscribeRow.kind) == STUDENT, col(UnsubscribeRow.recipient_id) == student_id
            )
        )
        self.rows.deleted(RecipientRow, (STUDENT, student_id))
        self.rows.deleted(UnsubscribeRow, (STUDENT, student_id))
        pending = list(
            await self.session.scalars(
                select(col(NotificationRow.notification_id)).where(
                    col(NotificationRow.recipient_kind) == STUDENT,
                    col(NotificationRow.recipient_id) == student_id,
                    col(NotificationRow.status) == "pending",
                )
            )
        )
        await self.session.execute(
            delete(NotificationItemRow).where(
                col(NotificationItemRow.recipient_kind) == STUDENT,
                col(NotificationItemRow.recipient_id) == student_id,
            )
        )
        # Items about the student in others' mail (a company's candidates) lose what named the student.
        about = await self.session.scalars(
            select(NotificationItemRow).where(col(NotificationItemRow.student_id) == student_id)
        )
        for item in about:
            item.details = {"erased": True}
            self.session.add(item)
        if pending:
            await self.session.execute(
                delete(NotificationRow).where(col(NotificationRow.notification_id).in_(pending))
            )
            for notification_id in pending:
                self.rows.deleted(NotificationRow, notification_id)


class NotificationsUnitOfWork(UnitOfWork):
    notifications: NotificationsRepository

    def _open(self, session: AsyncSession) -> None:
        repository = NotificationsRepository(session, self._held(session))
        self.notifications = self._forgotten_on_rollback(repository)
