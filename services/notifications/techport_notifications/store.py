"""Notifications' database: the recipients it needs (names, email, language, consent; nothing more), what it
must know to write about a vacancy, the notifications with their digest schedule (the delivery log), the
items each reports on, unsubscribes, and the outbox and processed-messages tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import UniqueConstraint, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col
from techport_shared.db import json_field, utc_field
from techport_shared.messaging import messaging_tables


class NotificationsTable(SQLModel, registry=registry()):
    """Base of notifications' tables: their own MetaData, so only they go into notifications' database."""


class RecipientRow(NotificationsTable, table=True):
    """A student, a vacancy's contact, or an organisation. recipient_id: the student id, `vacancy:<id>`,
    or the organisation id."""

    __tablename__ = "recipients"
    recipient_id: str = Field(primary_key=True, max_length=80)
    kind: str = Field(max_length=20)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    language: str = Field(max_length=2)
    email_consent: bool


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
    __tablename__ = "unsubscribes"
    recipient_id: str = Field(primary_key=True, max_length=80)
    unsubscribed_at: datetime = utc_field()


class ErasedRow(NotificationsTable, table=True):
    __tablename__ = "erased_students"
    student_id: str = Field(primary_key=True, max_length=64)
    erased_at: datetime = utc_field()


class NotificationRow(NotificationsTable, table=True):
    """One email to be sent (or suppressed, or failed): the delivery log. `due_at` is the digest schedule."""

    __tablename__ = "notifications"
    notification_id: str = Field(primary_key=True, max_length=64)
    recipient_id: str = Field(max_length=80, index=True)
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
    __table_args__ = (UniqueConstraint("recipient_id", "subject_id", name="uq_items_recipient_subject"),)
    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(max_length=64, index=True)
    recipient_id: str = Field(max_length=80)
    subject_id: str = Field(max_length=80)  # the match id or partnership id
    student_id: str | None = Field(default=None, max_length=64, index=True)  # whom the item is about
    about_ce_id: str = Field(max_length=200)
    details: dict[str, Any] = json_field()


metadata = NotificationsTable.metadata
tables = messaging_tables(metadata)


# "sending" is claimed: an SMTP server may have accepted it, so only a lapsed claim is sent again.
SENDABLE = ("pending", "sending")


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class NotificationsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, model: type[Any], key: Any) -> Any:
        return await self.session.get(model, key)

    def add(self, row: Any) -> None:
        self.session.add(row)

    async def open_digest(self, recipient_id: str, template: str) -> NotificationRow | None:
        """The pending notification still collecting items for this recipient, if any.

        Locked (PostgreSQL): while another replica claims this digest we wait, and then see it sending and
        start a new one, so no item joins a digest already on its way."""
        return await self.session.scalar(
            select(NotificationRow)
            .where(
                col(NotificationRow.recipient_id) == recipient_id,
                col(NotificationRow.template) == template,
                col(NotificationRow.status) == "pending",
                col(NotificationRow.attempts) == 0,
            )
            .with_for_update()
        )

    async def claim_for_sending(self, notification_id: str) -> NotificationRow | None:
        """The notification, locked until commit; None if another replica is sending it (PostgreSQL)."""
        return await self.session.scalar(
            select(NotificationRow)
            .where(col(NotificationRow.notification_id) == notification_id)
            .with_for_update(skip_locked=True)
        )

    async def has_item(self, recipient_id: str, subject_id: str) -> bool:
        found = await self.session.scalar(
            select(col(NotificationItemRow.id)).where(
                col(NotificationItemRow.recipient_id) == recipient_id,
                col(NotificationItemRow.subject_id) == subject_id,
            )
        )
        return found is not None

    async def items(self, notification_id: str) -> list[NotificationItemRow]:
        """What the notification still reports on: items about an erased student are left out."""
        rows = await self.session.scalars(
            select(NotificationItemRow)
            .where(col(NotificationItemRow.notification_id) == notification_id)
            .order_by(col(NotificationItemRow.id))
        )
        return [item for item in rows if not item.details.get("erased")]

    async def due(self, limit: int = 50) -> list[str]:
        """Pending notifications whose time has come, and sends whose claim lapsed (the sender died)."""
        rows = await self.session.scalars(
            select(col(NotificationRow.notification_id))
            .where(col(NotificationRow.status).in_(SENDABLE), col(NotificationRow.due_at) <= now())
            .order_by(col(NotificationRow.due_at))
            .limit(limit)
        )
        return list(rows)

    async def log(self, recipient_id: str) -> list[NotificationRow]:
        rows = await self.session.scalars(
            select(NotificationRow)
            .where(col(NotificationRow.recipient_id) == recipient_id)
            .order_by(col(NotificationRow.created_at))
        )
        return list(rows)

    async def failed(self) -> list[NotificationRow]:
        return list(
            await self.session.scalars(select(NotificationRow).where(col(NotificationRow.status) == "failed"))
        )

    async def forget_student(self, student_id: str) -> None:
        """Erasure: the student's recipient data, pending mail and what it would have said, gone."""
        await self.session.execute(delete(RecipientRow).where(col(RecipientRow.recipient_id) == student_id))
        pending = list(
            await self.session.scalars(
                select(col(NotificationRow.notification_id)).where(
                    col(NotificationRow.recipient_id) == student_id, col(NotificationRow.status) == "pending"
                )
            )
        )
        await self.session.execute(
            delete(NotificationItemRow).where(col(NotificationItemRow.recipient_id) == student_id)
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
