"""Matching's database: its own copy of what it needs of organisations, students and vacancies, the matches,
the partnerships, and the outbox and processed-messages tables. `MatchingUnitOfWork` gives handlers the
repository; nothing else sees a session.

Replicas keep their in-memory index in step with this database by change marks (`change_seq`): on PostgreSQL
the id of the transaction that wrote the row, read back from the oldest transaction still running (so no row
is missed, and no counter is shared by every decision); on SQLite, whose writers take turns anyway, a counter
taken by each writing transaction. `pending` marks a student or vacancy stored but not yet matched: matching
decides in a second transaction, after the store committed, so of two records stored at the same moment by
two replicas, at least one decision sees the other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, Column, UniqueConstraint, bindparam, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import registry
from sqlalchemy.schema import Index
from sqlmodel import Field, SQLModel, col
from techport_shared.db import HeldRows, RowInit, json_field, now, utc_field
from techport_shared.events import MatchFound, dump
from techport_shared.messaging import messaging_tables
from techport_shared.uow import UnitOfWork

from techport_matching.domain import StudentProfile, VacancyProfile


class MatchingTable(RowInit, SQLModel, registry=registry()):
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
    # The change mark of the transaction that wrote it (see the docstring): what replicas catch up by.
    change_seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, index=True, server_default="0")
    )
    # Stored, not yet matched; the event that caused it (its events carry these ids).
    pending: bool = Field(default=False, index=True)
    pending_cause: str | None = Field(default=None, max_length=200)
    pending_correlation: str | None = Field(default=None, max_length=200)

    def profile(self) -> StudentProfile:
        return student_profile(self)


def student_profile(row: Any) -> StudentProfile:
    """The profile of a student row, or of a plain row of `PROFILE_COLUMNS`."""
    return StudentProfile(
        row.student_id,
        row.school_id,
        row.level,
        frozenset(row.seeking),
        frozenset(row.skills),
        row.lat,
        row.lon,
        row.max_distance_km,
        row.consent_matching,
    )


# What the index is built and caught up from, read as plain rows, not ORM objects (identity map, instance
# state): every replica reads every student that any replica stores.
PROFILE_COLUMNS = tuple(
    col(column)
    for column in (
        StudentRow.student_id,
        StudentRow.school_id,
        StudentRow.level,
        StudentRow.seeking,
        StudentRow.skills,
        StudentRow.lat,
        StudentRow.lon,
        StudentRow.max_distance_km,
        StudentRow.consent_matching,
    )
)


class ErasedStudentRow(MatchingTable, table=True):
    __tablename__ = "erased_students"
    student_id: str = Field(primary_key=True, max_length=64)
    erased_at: datetime = utc_field()  # when the erasure happened (the event's time)
    recorded_at: datetime = utc_field()  # when this database learnt of it
    # The change mark of the transaction that wrote it (see the module's docstring).
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
    # The change mark of the transaction that wrote it (see the docstring): what replicas catch up by.
    change_seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, index=True, server_default="0")
    )
    # Its open matches: at most MATCH_TOP_K_PER_VACANCY, counted under this row's lock (not a shared one).
    open_matches: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    pending: bool = Field(default=False, index=True)
    pending_cause: str | None = Field(default=None, max_length=200)
    pending_correlation: str | None = Field(default=None, max_length=200)

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
    """SQLite only: one row, the last change number handed out. A writing transaction increments it, and
    SQLite's writers take turns, so numbers are handed out in commit order. (PostgreSQL marks changes with
    transaction ids instead: no row is shared by every decision there.)"""

    __tablename__ = "change_counter"
    id: int = Field(primary_key=True)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


class MatchRow(MatchingTable, table=True):
    __tablename__ = "matches"
    __table_args__ = (  # a company's matches with a school: asked for each pair a decision matches
        UniqueConstraint("student_id", "vacancy_id", name="uq_matches_pair"),
        Index("ix_matches_organisation_school", "organisation_id", "school_id"),
    )
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


def match_values(match: MatchFound) -> dict[str, Any]:
    """A new (open) match as a row of the matches table (a plain mapping: many are inserted at once)."""
    return {
        "match_id": match.match_id,
        "student_id": match.student_id,
        "vacancy_id": match.vacancy_id,
        "organisation_id": match.organisation_id,
        "school_id": match.school_id,
        "score": match.score,
        "reasons": dump(match.reasons),
        "status": "open",
        "withdrawn_reason": None,
        "created_at": now(),
    }


metadata = MatchingTable.metadata
tables = messaging_tables(metadata)


class MatchingRepository:
    def __init__(self, session: AsyncSession, rows: HeldRows) -> None:
        self.session = session
        self.rows = rows
        self._mark: int | None = None

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def get(self, model: type[Any], key: str) -> Any:
        return await self.rows.get(model, key)

    def add(self, row: Any) -> None:
        self.rows.add(row)

    async def delete(self, row: Any) -> None:
        await self.rows.delete(row)

    async def preload(self, students: set[str], vacancies: set[str], organisations: set[str]) -> None:
        """A batch's rows, read in a query per table before its handlers run."""
        await self.rows.load(StudentRow, students)
        await self.rows.load(ErasedStudentRow, students)
        await self.rows.load(VacancyRow, vacancies)
        await self.rows.load(OrganisationRow, organisations)

    # --- change marks: how replicas keep their index in step ------------------------------------------------
    async def change_mark(self) -> Any:
        """The mark of this transaction, for the rows it writes: on PostgreSQL its transaction id; on SQLite
        the next number of the counter (SQLite's writers take turns, so numbers follow commit order)."""
        if self._postgres:
            return text("pg_current_xact_id()::text::bigint")
        if self._mark is None:  # bumped and read back in one statement
            counter: Any = ChangeCounterRow.__table__  # type: ignore[attr-defined]
            bump = update(counter).where(counter.c.id == 1).values(value=counter.c.value + 1)
            self._mark = int(await self.session.scalar(bump.returning(counter.c.value)) or 0)
        return self._mark

    async def horizon(self) -> int:
        """Every row marked below this was written by a transaction that has ended: catching up from here
        later misses nothing (rows at or above it may be read twice; applying them again changes nothing)."""
        if self._postgres:
            return int(
                await self.session.scalar(
                    text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                )
                or 0
            )
        return await self._counter() + 1

    async def _counter(self) -> int:
        value = select(col(ChangeCounterRow.value)).where(col(ChangeCounterRow.id) == 1)
        return int(await self.session.scalar(value) or 0)

    async def changed_since(self, horizon: int) -> tuple[list[StudentProfile], list[VacancyRow], list[str]]:
        """What was written at or after `horizon`: students, vacancies (open or closed), erased ids."""
        found = await self.session.execute(
            select(*PROFILE_COLUMNS).where(col(StudentRow.change_seq) >= horizon)
        )
        students = [student_profile(row) for row in found]
        vacancies = list(
            await self.session.scalars(select(VacancyRow).where(col(VacancyRow.change_seq) >= horizon))
        )
        erased = list(
            await self.session.scalars(
                select(col(ErasedStudentRow.student_id)).where(col(ErasedStudentRow.change_seq) >= horizon)
            )
        )
        return students, vacancies, erased

    # --- what is stored -------------------------------------------------------------------------------------
    async def delete_student(self, student_id: str) -> None:
        await self.session.execute(delete(StudentRow).where(col(StudentRow.student_id) == student_id))
        self.rows.deleted(StudentRow, student_id)

    async def students(self, ids: list[str]) -> dict[str, StudentRow]:
        query = select(StudentRow).where(col(StudentRow.student_id).in_(sorted(ids)))
        return {row.student_id: row for row in await self.session.scalars(query)} if ids else {}

    async def hold_students(self, ids: list[str]) -> set[str]:
        """Which of these students are still stored, their rows held (shared) until commit: an erasure waits
        for this decision, then withdraws what it made."""
        query = select(col(StudentRow.student_id)).where(col(StudentRow.student_id).in_(sorted(ids)))
        if self._postgres:
            query = query.with_for_update(read=True)
        return set(await self.session.scalars(query))

    async def vacancies(self, ids: list[str]) -> dict[str, VacancyRow]:
        query = select(VacancyRow).where(col(VacancyRow.vacancy_id).in_(ids))
        return {row.vacancy_id: row for row in await self.session.scalars(query)} if ids else {}

    async def pending(self, model: type[Any], ids: list[str]) -> list[Any]:
        key = col(model.student_id if model is StudentRow else model.vacancy_id)
        query = select(model).where(key.in_(ids), col(model.pending).is_(True))
        return list(await self.session.scalars(query)) if ids else []  # none asked: no statement

    async def stale_pending(self, model: type[Any], before: datetime, limit: int = 500) -> list[str]:
        """Stored but never matched (a replica stopped between storing and deciding): taken up again."""
        key = col(model.student_id if model is StudentRow else model.vacancy_id)
        query = select(key).where(col(model.pending).is_(True), col(model.updated_at) < before).limit(limit)
        return list(await self.session.scalars(query))

    async def decided(self, rows: list[StudentRow | VacancyRow]) -> None:
        """Matched: no longer pending, unless a newer event marked it again meanwhile. One statement per
        table, executed for all rows at once."""
        tables: list[tuple[Any, str]] = [(StudentRow, "student_id"), (VacancyRow, "vacancy_id")]
        for model, key in tables:
            params = [
                {"key": getattr(r, key), "cause": r.pending_cause} for r in rows if isinstance(r, model)
            ]
            if params:
                table = model.__table__
                statement = (
                    update(table)
                    .where(table.c[key] == bindparam("key"), table.c.pending_cause == bindparam("cause"))
                    .values(pending=False)
                )
                await self.session.execute(statement, params)

    # --- matches --------------------------------------------------------------------------------------------
    async def paired_with(self, side: Literal["student", "vacancy"], ids: list[str]) -> dict[str, set[str]]:
        """For each student (`side` "student") or vacancy ("vacancy") of `ids`, the other side of every pair
        it was ever matched in (open or withdrawn): never matched again. One query for all of them."""
        paired: dict[str, set[str]] = {key: set() for key in ids}
        if not ids:
            return paired
        mine, other = (
            (MatchRow.student_id, MatchRow.vacancy_id)
            if side == "student"
            else (MatchRow.vacancy_id, MatchRow.student_id)
        )
        rows = await self.session.execute(select(col(mine), col(other)).where(col(mine).in_(ids)))
        for key, partner in rows:
            paired[key].add(partner)
        return paired

    async def lock_rooms(self, vacancy_ids: list[str]) -> dict[str, int]:
        """The open matches of these open vacancies, their rows locked until commit (PostgreSQL), always in
        the same order (by id), so two decisions never wait on each other in a circle."""
        table: Any = VacancyRow.__table__  # type: ignore[attr-defined]
        query = (
            select(table.c.vacancy_id, table.c.open_matches)
            .where(table.c.vacancy_id.in_(sorted(vacancy_ids)), table.c.status == "open")
            .order_by(table.c.vacancy_id)
        )
        if self._postgres:
            query = query.with_for_update()
        with self.session.no_autoflush:
            return {vacancy_id: int(count) for vacancy_id, count in await self.session.execute(query)}

    async def add_rooms(self, taken: dict[str, int]) -> None:
        """Count newly made matches into their vacancies' rooms (rows locked by `lock_rooms`)."""
        if not taken:
            return
        mark = await self.change_mark()
        table: Any = VacancyRow.__table__  # type: ignore[attr-defined]
        statement = (
            update(table)
            .where(table.c.vacancy_id == bindparam("vacancy"))
            .values(open_matches=table.c.open_matches + bindparam("count"), change_seq=mark)
        )
        with self.session.no_autoflush:
            await self.session.execute(
                statement, [{"vacancy": v, "count": n} for v, n in sorted(taken.items())]
            )

    async def insert_matches(self, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the matches (`match_values`) in one statement; a pair that already has one (another decision
        made it the same moment) is skipped by its unique key. Returns the ids of those inserted."""
        if not rows:
            return set()
        table: Any = MatchRow.__table__  # type: ignore[attr-defined]
        insert = postgresql.insert if self._postgres else sqlite.insert
        # Executed for all rows at once (SQLAlchemy's "insertmanyvalues"): one statement, compiled once.
        statement = insert(table).on_conflict_do_nothing().returning(table.c.match_id)
        return set(await self.session.scalars(statement, rows))

    async def give_room(self, vacancy_id: str, count: int) -> None:
        await self.session.execute(
            update(VacancyRow)
            .where(col(VacancyRow.vacancy_id) == vacancy_id)
            .values(
                open_matches=func.max(col(VacancyRow.open_matches) - count, 0)
                if not self._postgres
                else func.greatest(col(VacancyRow.open_matches) - count, 0),
                change_seq=await self.change_mark(),
            )
        )

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

    async def matches_of(self, student_id: str) -> list[MatchRow]:
        """Every match of a student, open or withdrawn (an export)."""
        rows = await self.session.scalars(select(MatchRow).where(col(MatchRow.student_id) == student_id))
        return list(rows)

    async def pair_matches(self, company_id: str, school_id: str, first: int | None = None) -> list[MatchRow]:
        """The matches between a company and a school, oldest first; with `first`, only that many."""
        pair = (col(MatchRow.organisation_id) == company_id) & (col(MatchRow.school_id) == school_id)
        query = select(MatchRow).where(pair).order_by(col(MatchRow.created_at), col(MatchRow.match_id))
        return list(await self.session.scalars(query.limit(first)))

    # --- partnerships ---------------------------------------------------------------------------------------
    async def partnership_between(self, company_id: str, school_id: str) -> PartnershipRow | None:
        return await self.session.scalar(
            select(PartnershipRow).where(
                col(PartnershipRow.company_id) == company_id, col(PartnershipRow.school_id) == school_id
            )
        )

    async def add_partnership(self, row: PartnershipRow) -> bool:
        """Store a proposal unless the two have one already (two replicas may propose the same moment)."""
        if await self.partnership_between(row.company_id, row.school_id) is not None:
            return False
        return await self._insert_unless_taken(row)

    async def _insert_unless_taken(self, row: Any) -> bool:
        """Insert; False when a concurrent transaction took the same unique key first. On PostgreSQL in a
        savepoint, so the transaction goes on; SQLite's writers take turns, so no one can have taken it."""
        if not self._postgres:
            self.session.add(row)  # written with the transaction's next statement
            return True
        try:
            async with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:
            return False
        return True

    async def partnerships_of(self, organisation_id: str | None) -> list[PartnershipRow]:
        query = select(PartnershipRow)
        if organisation_id is not None:
            query = query.where(
                (col(PartnershipRow.company_id) == organisation_id)
                | (col(PartnershipRow.school_id) == organisation_id)
            )
        return list(await self.session.scalars(query.order_by(col(PartnershipRow.created_at))))

    # --- the whole copy, for a rebuild of the index ---------------------------------------------------------
    async def stream_students(self, batch: int = 5000) -> AsyncIterator[list[StudentProfile]]:
        last = ""
        while True:
            found = await self.session.execute(
                select(*PROFILE_COLUMNS)
                .where(col(StudentRow.student_id) > last)
                .order_by(col(StudentRow.student_id))
                .limit(batch)
            )
            profiles = [student_profile(row) for row in found]
            if not profiles:
                return
            yield profiles
            last = profiles[-1].student_id

    async def count_students(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(StudentRow)) or 0)

    async def open_vacancies(self) -> list[VacancyRow]:
        return list(await self.session.scalars(select(VacancyRow).where(col(VacancyRow.status) == "open")))


class MatchingUnitOfWork(UnitOfWork):
    matching: MatchingRepository

    def _open(self, session: AsyncSession) -> None:
        self.matching = MatchingRepository(session, self._held(session))
