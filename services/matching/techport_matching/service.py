"""Matching's use cases: keep its copy of students, vacancies and organisations, find matches in the index,
record them once per pair, withdraw them, and propose and form partnerships. Events go through the outbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from techport_shared.db import SessionFactory
from techport_shared.envelope import Envelope
from techport_shared.events import (
    MatchFound,
    OrganisationData,
    StudentData,
    StudentErased,
    VacancyClosed,
    VacancyData,
    ce_type,
    dump,
)
from techport_shared.topics import MATCHES
from techport_shared.topics import PARTNERSHIPS as PARTNERSHIPS_TOPIC
from techport_shared.uow import UnitOfWork

from techport_matching.domain import assess, match_id, partnership_id
from techport_matching.index import MatchingIndex
from techport_matching.metrics import (
    INDEX_BYTES,
    INDEX_SIZE,
    MATCHES_FOUND,
    MATCHES_WITHDRAWN,
    PARTNERSHIPS,
    SCORING_SECONDS,
)
from techport_matching.settings import MatchingSettings
from techport_matching.store import (
    ErasedStudentRow,
    MatchingRepository,
    MatchRow,
    OrganisationRow,
    PartnershipRow,
    StudentRow,
    VacancyRow,
    changed_after,
    count_students,
    last_change,
    next_change,
    now,
    open_vacancies,
    stream_students,
)

SOURCE = "/matching"


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Origin:
    """The event or request a change comes from; the events it causes carry its ids."""

    correlation_id: str | None
    causation_id: str | None

    @classmethod
    def of(cls, event: Envelope) -> Origin:
        return cls(event.correlationid or event.id, event.id)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Matching:
    def __init__(self, settings: MatchingSettings, index: MatchingIndex | None = None) -> None:
        self.settings = settings
        self.index = index or MatchingIndex()
        # The last change number (store.ChangeCounterRow) whose rows this index holds.
        self._seen_change = 0

    # --- the index ----------------------------------------------------------------------------------------
    async def rebuild_index(
        self, sessions: SessionFactory, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Build a fresh index from the database, then swap it in."""
        fresh = MatchingIndex()
        async with sessions() as session:
            # Committed changes up to here are in what we read next; later ones come in by catch_up.
            seen = await last_change(session)
            total = await count_students(session)
            done = 0
            async for rows in stream_students(session):
                fresh.load_students([row.profile() for row in rows])
                done += len(rows)
                if progress:
                    progress(done, total)
            for vacancy in await open_vacancies(session):
                fresh.upsert_vacancy(vacancy.profile())
                count = await MatchingRepository(session).open_match_count(vacancy.vacancy_id)
                fresh.set_full(vacancy.vacancy_id, count >= self.settings.top_k_per_vacancy)
        fresh.warm()
        self.index = fresh
        self._seen_change = seen
        self._observe()

    async def catch_up(self, session: Any) -> int:
        """Take in what other replicas of matching stored, before matching anything; returns this
        transaction's change number, which the rows it writes carry.

        Every replica writes to the same database but consumes only its share of the partitions; its index
        must still know every student and vacancy. Taking the change number locks the counter until commit,
        so replicas decide one at a time and each sees every change committed before it (a student stored by
        one replica and a vacancy by another in the same instant are never both missed)."""
        change = await next_change(session)
        students, vacancies, erased = await changed_after(session, self._seen_change)
        for student in students:
            self.index.upsert_student(student.profile())
        for vacancy in vacancies:
            self.index.upsert_vacancy(vacancy.profile())
        for student_id in erased:
            self.index.remove_student(student_id)
        # Every number below ours belongs to a transaction that has ended: nothing older can still appear.
        self._seen_change = max(self._seen_change, change - 1)
        return change

    def _observe(self) -> None:
        stats = self.index.stats()
        INDEX_SIZE.labels("student").set(stats.students)
        INDEX_SIZE.labels("vacancy").set(stats.vacancies)
        INDEX_BYTES.set(stats.nbytes)

    # --- events in ----------------------------------------------------------------------------------------
    async def on_organisation(self, event: Envelope, data: OrganisationData, uow: UnitOfWork) -> None:
        repo = MatchingRepository(uow.session)
        row = await repo.get(OrganisationRow, data.organisation_id) or OrganisationRow(
            organisation_id=data.organisation_id, kind=data.kind, name=data.name
        )
        row.kind, row.name = data.kind, data.name
        repo.add(row)

    async def on_student(self, event: Envelope, data: StudentData, uow: UnitOfWork) -> None:
        repo = MatchingRepository(uow.session)
        change = await self.catch_up(uow.session)
        erased = await repo.get(ErasedStudentRow, data.student_id)
        if erased is not None:
            # Only a new registration after the erasure brings a student back; a late update does not.
            if event.type != ce_type("student.registered") or event.time <= _aware(erased.erased_at):
                return
            await uow.session.delete(erased)
        row = await repo.get(StudentRow, data.student_id) or StudentRow(
            student_id=data.student_id,
            given_name="",
            level="",
            programme="",
            seeking=[],
            skills=[],
            max_distance_km=0,
            consent_matching=False,
        )
        location = data.location
        row.school_id, row.given_name, row.level, row.programme = (
            data.school_id,
            data.given_name,
            data.level,
            data.programme,
        )
        row.seeking, row.skills = list(data.seeking), list(data.skills)
        row.lat, row.lon = (location.lat, location.lon) if location else (None, None)
        row.max_distance_km, row.consent_matching, row.updated_at, row.change_seq = (
            data.max_distance_km,
            data.consent.matching,
            now(),
            change,
        )
        repo.add(row)
        origin = Origin.of(event)
        profile = row.profile()
        if not profile.consent_matching:
            await self._withdraw(
                uow, await repo.open_matches(student_id=data.student_id), "consent withdrawn", origin
            )
        uow.after_commit(lambda: self.index.upsert_student(profile))
        if not profile.consent_matching:
            return
        started = time.perf_counter()
        # The index holds what is committed; this student's new state goes in after commit, so match here.
        found = self.index.match_student(
            profile,
            self.settings.min_score,
            self.settings.top_k_per_student,
            await repo.paired(student_id=data.student_id),
        )
        SCORING_SECONDS.labels("student").observe(time.perf_counter() - started)
        vacancies = await repo.vacancies([vacancy_id for vacancy_id, _ in found])
        for vacancy_id, _score in found:
            await self._record_match(uow, row, vacancies[vacancy_id], origin, "student")

    async def on_student_erased(self, event: Envelope, data: StudentErased, uow: UnitOfWork) -> None:
        repo = MatchingRepository(uow.session)
        change = await self.catch_up(uow.session)
        await self._withdraw(
            uow, await repo.open_matches(student_id=data.student_id), "student erased", Origin.of(event)
        )
        await repo.delete_student(data.student_id)
        if await repo.get(ErasedStudentRow, data.student_id) is None:
            repo.add(
                ErasedStudentRow(
                    student_id=data.student_id, erased_at=event.time, recorded_at=now(), change_seq=change
                )
            )
        uow.after_commit(lambda: self.index.remove_student(data.student_id))

    async def on_vacancy(self, event: Envelope, data: VacancyData, uow: UnitOfWork) -> None:
        repo = MatchingRepository(uow.session)
        change = await self.catch_up(uow.session)
        row = await repo.get(VacancyRow, data.vacancy_id)
        if row is not None and row.status == "closed":
            return
        row = row or VacancyRow(
            vacancy_id=data.vacancy_id,
            organisation_id=data.organisation_id,
            title="",
            kind=data.kind,
            levels=[],
            required_skills=[],
            preferred_skills=[],
            status="open",
        )
        location = data.location
        row.organisation_id, row.title, row.kind = data.organisation_id, data.title, data.kind
        row.levels, row.required_skills, row.preferred_skills = (
            list(data.levels),
            list(data.required_skills),
            list(data.preferred_skills),
        )
        row.lat, row.lon = (location.lat, location.lon) if location else (None, None)
        row.updated_at, row.change_seq = now(), change
        repo.add(row)
        profile = row.profile()
        open_count = await repo.open_match_count(data.vacancy_id)
        room = self.settings.top_k_per_vacancy - open_count
        started = time.perf_counter()
        found = (
            self.index.match_vacancy(
                profile, self.settings.min_score, room, await repo.paired(vacancy_id=data.vacancy_id)
            )
            if room > 0
            else []
        )
        SCORING_SECONDS.labels("vacancy").observe(time.perf_counter() - started)
        students = await repo.students([student_id for student_id, _ in found])
        origin = Origin.of(event)
        for student_id, _score in found:
            await self._record_match(uow, students[student_id], row, origin, "vacancy")
        full = open_count + len(found) >= self.settings.top_k_per_vacancy

        def index_it() -> None:
            self.index.upsert_vacancy(profile)
            self.index.set_full(profile.vacancy_id, full)

        uow.after_commit(index_it)

    async def on_vacancy_closed(self, event: Envelope, data: VacancyClosed, uow: UnitOfWork) -> None:
        repo = MatchingRepository(uow.session)
        change = await self.catch_up(uow.session)
        row = await repo.get(VacancyRow, data.vacancy_id)
        if row is not None:
            row.status, row.updated_at, row.change_seq = "closed", now(), change
            repo.add(row)
        matches = await repo.open_matches(vacancy_id=data.vacancy_id)
        await self._withdraw(uow, matches, f"vacancy closed: {data.reason}", Origin.of(event))
        uow.after_commit(lambda: self.index.remove_vacancy(data.vacancy_id))

    # --- matches and partnerships -------------------------------------------------------------------------
    async def _record_match(
        self, uow: UnitOfWork, student: StudentRow, vacancy: VacancyRow, origin: Origin, trigger: str
    ) -> None:
        result = assess(student.profile(), vacancy.profile())
        reasons = {
            "matched_skills": list(result.matched),
            "missing_skills": list(result.missing),
            "preferred_matched": list(result.preferred_matched),
            "distance_km": None if result.distance_km is None else round(result.distance_km, 2),
            "level_ok": True,
            "kind_ok": True,
        }
        match = MatchFound(
            match_id=match_id(student.student_id, vacancy.vacancy_id),
            student_id=student.student_id,
            vacancy_id=vacancy.vacancy_id,
            organisation_id=vacancy.organisation_id,
            school_id=student.school_id,
            score=round(result.score, 6),
            reasons=reasons,
        )
        uow.session.add(
            MatchRow(
                match_id=match.match_id,
                student_id=match.student_id,
                vacancy_id=match.vacancy_id,
                organisation_id=match.organisation_id,
                school_id=match.school_id,
                score=match.score,
                reasons=reasons,
                status="open",
                created_at=now(),
            )
        )
        await uow.session.flush()
        self._emit(uow, MATCHES.name, ce_type("match.found"), dump(match), student.student_id, origin)
        MATCHES_FOUND.labels(trigger).inc()
        if student.school_id is not None:
            await self._maybe_propose(uow, vacancy.organisation_id, student.school_id, origin)

    async def _withdraw(self, uow: UnitOfWork, matches: list[MatchRow], reason: str, origin: Origin) -> None:
        for match in matches:
            match.status, match.withdrawn_reason = "withdrawn", reason
            uow.session.add(match)
            data = {"match_id": match.match_id, "reason": reason}
            self._emit(uow, MATCHES.name, ce_type("match.withdrawn"), data, match.student_id, origin)
            MATCHES_WITHDRAWN.labels(reason.split(":")[0]).inc()
        if matches:
            vacancy_ids = {m.vacancy_id for m in matches}

            def room_again() -> None:
                for vacancy_id in vacancy_ids:
                    self.index.set_full(vacancy_id, False)

            uow.after_commit(room_again)

    async def _maybe_propose(self, uow: UnitOfWork, company_id: str, school_id: str, origin: Origin) -> None:
        repo = MatchingRepository(uow.session)
        if await repo.partnership_between(company_id, school_id) is not None:
            return
        matches = await repo.pair_matches(company_id, school_id)
        if len(matches) < self.settings.partnership_min_matches:
            return
        await self._propose(uow, company_id, school_id, "system", matches, origin)

    async def _propose(
        self,
        uow: UnitOfWork,
        company_id: str,
        school_id: str,
        proposed_by: str,
        matches: list[MatchRow],
        origin: Origin,
    ) -> PartnershipRow:
        shared = sorted({skill for m in matches for skill in m.reasons.get("matched_skills", [])})
        basis = {"matches": len(matches), "shared_skills": shared[:25]}
        row = PartnershipRow(
            partnership_id=partnership_id(company_id, school_id),
            company_id=company_id,
            school_id=school_id,
            status="proposed",
            basis=basis,
            proposed_by=proposed_by,
            company_accepted=proposed_by == company_id,
            school_accepted=proposed_by == school_id,
            created_at=now(),
        )
        uow.session.add(row)
        data = {
            "partnership_id": row.partnership_id,
            "company_id": company_id,
            "school_id": school_id,
            "basis": basis,
        }
        self._emit(
            uow, PARTNERSHIPS_TOPIC.name, ce_type("partnership.proposed"), data, row.partnership_id, origin
        )
        PARTNERSHIPS.labels("proposed").inc()
        return row

    async def propose(
        self, uow: UnitOfWork, company_id: str, school_id: str, by: str, origin: Origin
    ) -> PartnershipRow:
        repo = MatchingRepository(uow.session)
        company = await repo.get(OrganisationRow, company_id)
        school = await repo.get(OrganisationRow, school_id)
        if company is None or company.kind != "company":
            raise Refused(422, f"company_id: {company_id} is not a known company")
        if school is None or school.kind != "school":
            raise Refused(422, f"school_id: {school_id} is not a known school")
        if await repo.partnership_between(company_id, school_id) is not None:
            raise Refused(409, "these two already have a partnership")
        return await self._propose(
            uow, company_id, school_id, by, await repo.pair_matches(company_id, school_id), origin
        )

    async def accept(
        self, uow: UnitOfWork, partnership_id_: str, side: str, origin: Origin
    ) -> PartnershipRow:
        row: PartnershipRow | None = await MatchingRepository(uow.session).get(
            PartnershipRow, partnership_id_
        )
        if row is None:
            raise Refused(404, f"unknown partnership {partnership_id_}")
        if side == row.company_id:
            row.company_accepted = True
        elif side == row.school_id:
            row.school_accepted = True
        else:
            raise Refused(403, "only the company or the school of a partnership accepts it")
        if row.status == "proposed" and row.company_accepted and row.school_accepted:
            row.status, row.formed_at = "formed", now()
            data = {
                "partnership_id": row.partnership_id,
                "company_id": row.company_id,
                "school_id": row.school_id,
                "formed_at": row.formed_at.isoformat(),
            }
            self._emit(
                uow, PARTNERSHIPS_TOPIC.name, ce_type("partnership.formed"), data, row.partnership_id, origin
            )
            PARTNERSHIPS.labels("formed").inc()
        uow.session.add(row)
        return row

    def _emit(
        self, uow: UnitOfWork, topic: str, type_: str, data: dict[str, Any], subject: str, origin: Origin
    ) -> None:
        uow.emit(
            topic,
            Envelope(
                type=type_,
                source=SOURCE,
                subject=subject,
                data=data,
                correlationid=origin.correlation_id,
                causationid=origin.causation_id,
            ),
        )
