"""Matching's database: its own copy of what it needs of organisations, students and vacancies, the matches,
the partnerships, and the outbox and processed-messages tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, UniqueConstraint, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col
from techport_shared.db import json_field, utc_field
from techport_shared.messaging import messaging_tables

from techport_matching.domain import StudentProfile, VacancyProfile


class MatchingTable(SQLModel, registry=registry()):
    """Base of matching's tables: their own MetaData, so only they go into matching's database."""


class OrganisationRow(MatchingTable, table=True):
    __tablename__ = "organisations"
    organisation_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=20)
    name: str = Field(max_length=200)


def _change_seq_column() -> Column[int]:
    return Column(BigInteger, nullable=False, index=True, server_default="0")


class StudentRow(MatchingTable, table=True):
    """What matching needs of a student. First name, level and programme are what a company may see."""

    __tablename__ = "students"
    student_id: str = Field(primary_key=True, max_length=64)
    school_id: str | None = Field(default=None, max_length=64, index=True)
    given_name: str = Field(max_length=200)
    level: str = Field(max_length=20)
    programme: str = Field(max_length=200)
    seeking: list[str] = json_field()
    skills: list[str] = json_field()
    lat: float | None = None
    lon: float | None = None
    max_distance_km: float
    consent_matching: bool
    updated_at: datetime = utc_field()
    # Commit order among all replicas (see ChangeCounterRow): what the others catch up by.
    change_seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, index=True, server_default="0")
    )

    def profile(self) -> StudentProfile:
        return StudentProfile(
            self.student_id,
            self.school_id,
            self.level,
            frozenset(self.seeking),
            frozenset(self.skills),
            self.lat,
            self.lon,
            self.max_distance_km,
            self.consent_matching,
        )


class ErasedStudentRow(MatchingTable, table=True):
    __tablename__ = "erased_students"
    student_id: str = Field(primary_key=True, max_length=64)
    erased_at: datetime = utc_field()  # when the erasure happened (the event's time)
    recorded_at: datetime = utc_field()  # when this database learnt of it
    # Commit order among all replicas (see ChangeCounterRow): what the others catch up by.
    change_seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, index=True, server_default="0")
    )


class VacancyRow(MatchingTable, table=True):
    __tablename__ = "vacancies"
    vacancy_id: str = Field(primary_key=True, max_length=64)
    organisation_id: str = Field(max_length=64, index=True)
    title: str = Field(max_length=200)
    kind: str = Field(max_length=20)
    levels: list[str] = json_field()
    required_skills: list[str] = json_field()
    preferred_skills: list[str] = json_field()
    lat: float | None = None
    lon: float | None = None
    status: str = Field(max_length=10, index=True)
    updated_at: datetime = utc_field()
    # Commit order among all replicas (see ChangeCounterRow): what the others catch up by.
    change_seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, index=True, server_default="0")
    )

    def profile(self) -> VacancyProfile:
        return VacancyProfile(
            self.vacancy_id,
            self.organisation_id,
            self.kind,
            frozenset(self.levels),
            # A skill listed twice counts once.
            tuple(dict.fromkeys(self.required_skills)),
            tuple(dict.fromkeys(self.preferred_skills)),
            self.lat,
            self.lon,
            self.status == "open",
        )


class ChangeCounterRow(MatchingTable, table=True):
    """One row: the last change number handed out. A handler increments it first thing in its transaction,
    which locks the row (SQLite: the database) until commit, so numbers are handed out in commit order and
    `change_seq > n` finds exactly what committed after change n: no clock, no overlap window."""

    __tablename__ = "change_counter"
    id: int = Field(primary_key=True)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


class MatchRow(MatchingTable, table=True):
    __tablename__ = "matches"
    __table_args__ = (UniqueConstraint("student_id", "vacancy_id", name="uq_matches_pair"),)
    match_id: str = Field(primary_key=True, max_length=64)
    student_id: str = Field(max_length=64, index=True)
    vacancy_id: str = Field(max_length=64, index=True)
    organisation_id: str = Field(max_length=64)
    school_id: str | None = Field(default=None, max_length=64)
    score: float
    reasons: dict[str, Any] = json_field()
    status: str = Field(max_length=10)
    withdrawn_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = utc_field()


class PartnershipRow(MatchingTable, table=True):
    __tablename__ = "partnerships"
    __table_args__ = (UniqueConstraint("company_id", "school_id", name="uq_partnerships_pair"),)
    partnership_id: str = Field(primary_key=True, max_length=64)
    company_id: str = Field(max_length=64, index=True)
    school_id: str = Field(max_length=64, index=True)
    status: str = Field(max_length=10)
    basis: dict[str, Any] = json_field()
    proposed_by: str = Field(max_length=64)
    company_accepted: bool = False
    school_accepted: bool = False
    created_at: datetime = utc_field()
    formed_at: datetime | None = utc_field(nullable=True)


metadata = MatchingTable.metadata
tables = messaging_tables(metadata)


def now() -> datetime:
    return datetime.now(UTC)


class MatchingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, model: type[Any], key: str) -> Any:
        return await self.session.get(model, key)

    def add(self, row: Any) -> None:
        self.session.add(row)

    async def delete_student(self, student_id: str) -> None:
        await self.session.execute(delete(StudentRow).where(col(StudentRow.student_id) == student_id))

    async def students(self, ids: list[str]) -> dict[str, StudentRow]:
        rows = await self.session.scalars(select(StudentRow).where(col(StudentRow.student_id).in_(ids)))
        return {row.student_id: row for row in rows}

    async def vacancies(self, ids: list[str]) -> dict[str, VacancyRow]:
        rows = await self.session.scalars(select(VacancyRow).where(col(VacancyRow.vacancy_id).in_(ids)))
        return {row.vacancy_id: row for row in rows}

    async def paired(self, *, student_id: str | None = None, vacancy_id: str | None = None) -> set[str]:
        """The other side of every pair already matched (open or withdrawn): never matched again."""
        if student_id is not None:
            rows = await self.session.scalars(
                select(col(MatchRow.vacancy_id)).where(col(MatchRow.student_id) == student_id)
            )
        else:
            rows = await self.session.scalars(
                select(col(MatchRow.student_id)).where(col(MatchRow.vacancy_id) == vacancy_id)
            )
        return set(rows)

    async def open_matches(
        self, *, student_id: str | None = None, vacancy_id: str | None = None
    ) -> list[MatchRow]:
        query = select(MatchRow).where(col(MatchRow.status) == "open")
        if student_id is not None:
            query = query.where(col(MatchRow.student_id) == student_id)
        if vacancy_id is not None:
            query = query.where(col(MatchRow.vacancy_id) == vacancy_id)
        rows = await self.session.scalars(query.order_by(col(MatchRow.score).desc(), col(MatchRow.match_id)))
        return list(rows)

    async def open_match_count(self, vacancy_id: str) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(MatchRow)
                .where(col(MatchRow.vacancy_id) == vacancy_id, col(MatchRow.status) == "open")
            )
            or 0
        )

    async def pair_matches(self, company_id: str, school_id: str) -> list[MatchRow]:
        rows = await self.session.scalars(
            select(MatchRow).where(
                col(MatchRow.organisation_id) == company_id, col(MatchRow.school_id) == school_id
            )
        )
        return list(rows)

    async def partnership_between(self, company_id: str, school_id: str) -> PartnershipRow | None:
        return await self.session.scalar(
            select(PartnershipRow).where(
                col(PartnershipRow.company_id) == company_id, col(PartnershipRow.school_id) == school_id
            )
        )

    async def partnerships_of(self, organisation_id: str | None) -> list[PartnershipRow]:
        query = select(PartnershipRow)
        if organisation_id is not None:
            query = query.where(
                (col(PartnershipRow.company_id) == organisation_id)
                | (col(PartnershipRow.school_id) == organisation_id)
            )
        return list(await self.session.scalars(query.order_by(col(PartnershipRow.created_at))))


async def stream_students(session: AsyncSession, batch: int = 5000) -> AsyncIterator[list[StudentRow]]:
    """Every student, in batches (rebuilding the index)."""
    last = ""
    while True:
        rows = list(
            await session.scalars(
                select(StudentRow)
                .where(col(StudentRow.student_id) > last)
                .order_by(col(StudentRow.student_id))
                .limit(batch)
            )
        )
        if not rows:
            return
        yield rows
        last = rows[-1].student_id


async def count_students(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(StudentRow)) or 0)


async def open_vacancies(session: AsyncSession) -> list[VacancyRow]:
    return list(await session.scalars(select(VacancyRow).where(col(VacancyRow.status) == "open")))


async def next_change(session: AsyncSession) -> int:
    """Take the next change number; the counter row stays locked until this transaction ends."""
    await session.execute(
        update(ChangeCounterRow)
        .where(col(ChangeCounterRow.id) == 1)
        .values(value=col(ChangeCounterRow.value) + 1)
    )
    return await last_change(session)


async def last_change(session: AsyncSession) -> int:
    value = select(col(ChangeCounterRow.value)).where(col(ChangeCounterRow.id) == 1)
    return int(await session.scalar(value) or 0)


async def changed_after(
    session: AsyncSession, seen: int
) -> tuple[list[StudentRow], list[VacancyRow], list[str]]:
    """What changed after change number `seen`: students, vacancies (open or closed), erased student ids."""
    students = list(await session.scalars(select(StudentRow).where(col(StudentRow.change_seq) > seen)))
    vacancies = list(await session.scalars(select(VacancyRow).where(col(VacancyRow.change_seq) > seen)))
    erased = list(
        await session.scalars(
            select(col(ErasedStudentRow.student_id)).where(col(ErasedStudentRow.change_seq) > seen)
        )
    )
    return students, vacancies, erased
