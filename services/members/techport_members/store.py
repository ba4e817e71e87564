"""Members' database: organisations, students (and erased markers), vacancies, plus the outbox and the
processed-messages table. Each record keeps its canonical data (what its last event said) as JSON, beside the
columns we look records up by. `MembersUnitOfWork` gives handlers the repository; nothing else sees a
session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Index, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col
from techport_shared.db import HeldRows, RowInit, aware, json_field, utc_field
from techport_shared.messaging import messaging_tables
from techport_shared.sealing import new_key
from techport_shared.topics import STUDENTS
from techport_shared.uow import UnitOfWork

from techport_members.domain import OrganisationState, StudentState, VacancyState


class MembersTable(RowInit, SQLModel, registry=registry()):
    """Base of members' tables: their own MetaData, so only they go into members' database."""


class OrganisationRow(MembersTable, table=True):
    __tablename__ = "organisations"
    organisation_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=20, index=True)
    data: dict[str, Any] = json_field()
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class StudentRow(MembersTable, table=True):
    __tablename__ = "students"
    # A school's list of its students, page by page in id order (`GET /students?school_id=`).
    __table_args__ = (Index("ix_students_school_student", "school_id", "student_id"),)
    student_id: str = Field(primary_key=True, max_length=64)
    school_id: str | None = Field(default=None, max_length=64, index=True)
    data: dict[str, Any] = json_field()
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class ErasedStudentRow(MembersTable, table=True):
    """All that remains of an erased student: that it was erased, when, and by which school."""

    __tablename__ = "erased_students"
    student_id: str = Field(primary_key=True, max_length=64)
    school_id: str | None = Field(default=None, max_length=64)
    erased_at: datetime = utc_field()


class StudentKeyRow(MembersTable, table=True):
    """The key a student's personal fields are sealed with on the topics (sealing.py). Erasure deletes it,
    and with it every sealed copy becomes unreadable."""

    __tablename__ = "student_keys"
    student_id: str = Field(primary_key=True, max_length=64)
    key_id: str = Field(max_length=40)
    key: bytes
    created_at: datetime = utc_field()


class VacancyRow(MembersTable, table=True):
    __tablename__ = "vacancies"
    # A search reads open (or closed) vacancies in id order (`GET /vacancies`).
    __table_args__ = (Index("ix_vacancies_status_vacancy", "status", "vacancy_id"),)
    vacancy_id: str = Field(primary_key=True, max_length=64)
    organisation_id: str = Field(max_length=64, index=True)
    status: str = Field(max_length=10, index=True)
    closed_reason: str | None = Field(default=None, max_length=20)
    data: dict[str, Any] = json_field()
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


metadata = MembersTable.metadata
tables = messaging_tables(metadata)


class MembersRepository:
    def __init__(self, session: AsyncSession, rows: HeldRows) -> None:
        self.session = session
        self.rows = rows

    async def preload(self, students: set[str], organisations: set[str], vacancies: set[str]) -> None:
        """A batch's rows, read in a query per table before its handlers run (they then ask nothing)."""
        for model in (StudentRow, ErasedStudentRow, StudentKeyRow):
            await self.rows.load(model, students)
        await self.rows.load(OrganisationRow, organisations)
        await self.rows.load(VacancyRow, vacancies)

    async def organisation(self, organisation_id: str) -> OrganisationState | None:
        row = await self.rows.get(OrganisationRow, organisation_id)
        return None if row is None else OrganisationState(row.organisation_id, row.kind, row.data)

    async def save_organisation(self, data: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        row = await self.rows.get(OrganisationRow, data["organisation_id"])
        if row is None:
            row = OrganisationRow(
                organisation_id=data["organisation_id"],
                kind=data["kind"],
                data=data,
                created_at=now,
                updated_at=now,
            )
        else:
            row.data, row.updated_at = data, now
        self.rows.add(row)

    async def student(self, student_id: str) -> StudentState | None:
        row = await self.rows.get(StudentRow, student_id)
        if row is not None:
            return StudentState(row.student_id, row.school_id, row.data)
        erased = await self.rows.get(ErasedStudentRow, student_id)
        if erased is not None:
            return StudentState(student_id, erased.school_id, None, aware(erased.erased_at))
        return None

    async def save_student(self, data: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        # A new registration by its school brings an erased student back.
        erased = await self.rows.get(ErasedStudentRow, data["student_id"])
        if erased is not None:
            await self.rows.delete(erased)
        row = await self.rows.get(StudentRow, data["student_id"])
        if row is None:
            row = StudentRow(
                student_id=data["student_id"],
                school_id=data["school_id"],
                data=data,
                created_at=now,
                updated_at=now,
            )
        else:
            row.school_id, row.data, row.updated_at = data["school_id"], data, now
        self.rows.add(row)

    async def student_key(self, student_id: str) -> tuple[str, bytes]:
        """The key (id and bytes) the student's personal fields are sealed with, made on first use."""
        row = await self.rows.get(StudentKeyRow, student_id)
        if row is None:
            row = StudentKeyRow(
                student_id=student_id, key_id=uuid.uuid4().hex, key=new_key(), created_at=datetime.now(UTC)
            )
            self.rows.add(row)
        return row.key_id, row.key

    async def student_key_info(self, student_id: str) -> dict[str, str] | None:
        """That the student has a key, and since when (for an export: never the key itself)."""
        row = await self.rows.get(StudentKeyRow, student_id)
        return None if row is None else {"key_id": row.key_id, "created_at": row.created_at.isoformat()}

    async def student_keys(self, wanted: dict[str, str]) -> dict[str, bytes | None]:
        """The keys asked for (student id -> key id); None where the key is gone or was replaced."""
        rows = await self.session.scalars(
            select(StudentKeyRow).where(col(StudentKeyRow.student_id).in_(list(wanted)))
        )
        found = {row.student_id: row for row in rows}
        return {
            student_id: found[student_id].key
            if student_id in found and found[student_id].key_id == kid
            else None
            for student_id, kid in wanted.items()
        }

    async def erase_student(self, student_id: str) -> None:
        """Remove every trace of the student's personal data from this database (the outbox included), and
        destroy its key: every sealed copy on the topics is unreadable from now on."""
        row = await self.rows.get(StudentRow, student_id)
        school_id = row.school_id if row is not None else None
        await self.session.execute(delete(StudentRow).where(col(StudentRow.student_id) == student_id))
        await self.session.execute(delete(StudentKeyRow).where(col(StudentKeyRow.student_id) == student_id))
        self.rows.deleted(StudentRow, student_id)
        self.rows.deleted(StudentKeyRow, student_id)
        outbox = tables.outbox
        await self.session.execute(
            delete(outbox).where(outbox.c.topic == STUDENTS.name, outbox.c.message_key == student_id)
        )
        self.rows.add(
            ErasedStudentRow(student_id=student_id, school_id=school_id, erased_at=datetime.now(UTC))
        )

    # --- pages of lists and searches, in key order after a cursor's key (techport_shared.paging) -----------
    async def students_page(self, school_id: str | None, after: str | None, limit: int) -> list[StudentRow]:
        where = [] if school_id is None else [col(StudentRow.school_id) == school_id]
        return await self._page(StudentRow, col(StudentRow.student_id), after, limit, where)

    async def organisations_page(
        self, kind: str | None, only: str | None, after: str | None, limit: int
    ) -> list[OrganisationRow]:
        where = [] if kind is None else [col(OrganisationRow.kind) == kind]
        if only is not None:
            where.append(col(OrganisationRow.organisation_id) == only)
        return await self._page(OrganisationRow, col(OrganisationRow.organisation_id), after, limit, where)

    async def vacancies_page(
        self, status: str, organisation_id: str | None, after: str | None, limit: int
    ) -> list[VacancyRow]:
        where = [col(VacancyRow.status) == status]
        if organisation_id is not None:
            where.append(col(VacancyRow.organisation_id) == organisation_id)
        return await self._page(VacancyRow, col(VacancyRow.vacancy_id), after, limit, where)

    async def _page(
        self, model: Any, key: Any, after: str | None, limit: int, where: list[ColumnElement[bool]]
    ) -> list[Any]:
        if after is not None:
            where = [*where, key > after]
        return list(await self.session.scalars(select(model).where(*where).order_by(key).limit(limit)))

    async def organisation_ids(self) -> list[str]:
        return list(await self.session.scalars(select(col(OrganisationRow.organisation_id))))

    async def vacancy(self, vacancy_id: str) -> VacancyState | None:
        row = await self.rows.get(VacancyRow, vacancy_id)
        if row is None:
            return None
        return VacancyState(
            row.vacancy_id, row.organisation_id, "closed" if row.status == "closed" else "open", row.data
        )

    async def save_vacancy(self, data: dict[str, Any], closed_reason: str | None = None) -> None:
        now = datetime.now(UTC)
        row = await self.rows.get(VacancyRow, data["vacancy_id"])
        if row is None:
            row = VacancyRow(
                vacancy_id=data["vacancy_id"],
                organisation_id=data["organisation_id"],
                status="open",
                data=data,
                created_at=now,
                updated_at=now,
            )
        row.data, row.updated_at = data, now
        if closed_reason is not None:
            row.status, row.closed_reason = "closed", closed_reason
        self.rows.add(row)


class MembersUnitOfWork(UnitOfWork):
    members: MembersRepository

    def _open(self, session: AsyncSession) -> None:
        self.members = MembersRepository(session, self._held(session))
