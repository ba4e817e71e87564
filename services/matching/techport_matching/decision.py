"""Deciding: what was stored, matched against the index, in two phases so that replicas decide side by side.

1. Score, holding no lock: the batch's pending students and vacancies against the index (caught up from the
   database first), with the pairs already made left out. This is where the time goes; it waits for nobody.
2. Write, briefly: the rooms of the vacancies concerned are locked in one order (by id) and the students
   read under a shared lock (an erasure waits for the decision, then withdraws what it made); the matches
   that still fit are inserted in one statement, a pair another decision made meanwhile is skipped by its
   unique key, the rooms are counted up, and the events go to the outbox.

A decision's locks are held for phase 2 only, a few statements long, so two replicas' decisions overlap for
all their scoring instead of queueing behind each other's row locks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from techport_shared.db import now
from techport_shared.envelope import Origin
from techport_shared.events import MatchFound, ce_type, dump
from techport_shared.messagebus import Context
from techport_shared.topics import MATCHES
from techport_shared.topics import PARTNERSHIPS as PARTNERSHIPS_TOPIC

from techport_matching import domain
from techport_matching.keeper import IndexKeeper
from techport_matching.metrics import MATCHES_FOUND, PARTNERSHIPS, SCORING_SECONDS
from techport_matching.settings import MatchingSettings
from techport_matching.store import (
    MatchingUnitOfWork,
    MatchRow,
    PartnershipRow,
    StudentRow,
    VacancyRow,
    match_values,
)

SOURCE = "/matching"


@dataclass(frozen=True)
class Decide:
    """Match the named students and vacancies that are stored and still pending."""

    students: tuple[str, ...]
    vacancies: tuple[str, ...]


@dataclass(frozen=True)
class _Candidate:
    student: StudentRow
    vacancy: VacancyRow
    origin: Origin
    trigger: str  # "student" or "vacancy": which side's event found it


def _origin(row: StudentRow | VacancyRow) -> Origin:
    return Origin(row.pending_correlation, row.pending_cause, now(), "event")


async def decide(
    command: Decide,
    uow: MatchingUnitOfWork,
    context: Context,
    keeper: IndexKeeper,
    settings: MatchingSettings,
    key: bytes,
) -> int:
    repo = uow.matching
    await keeper.catch_up(repo)
    students = await repo.pending(StudentRow, list(command.students))
    vacancies = await repo.pending(VacancyRow, list(command.vacancies))
    candidates = await _score(uow, keeper, settings, students, vacancies)
    made = await _write(uow, keeper, settings, key, candidates) if candidates else 0
    await repo.decided([*students, *vacancies])
    await uow.commit()
    return made


async def _score(
    uow: MatchingUnitOfWork,
    keeper: IndexKeeper,
    settings: MatchingSettings,
    students: list[StudentRow],
    vacancies: list[VacancyRow],
) -> list[_Candidate]:
    repo, index = uow.matching, keeper.index
    found: list[tuple[StudentRow, str, str]] = []  # (student, vacancy id, trigger)
    students_paired = await repo.paired_with("student", [s.student_id for s in students])
    for student in students:
        profile = student.profile()
        if not profile.consent_matching:
            continue
        started = time.perf_counter()
        best = index.match_student(
            profile, settings.min_score, settings.top_k_per_student, students_paired[student.student_id]
        )
        SCORING_SECONDS.labels("student").observe(time.perf_counter() - started)
        found += [(student, vacancy_id, "student") for vacancy_id, _ in best]
    by_vacancy: list[tuple[VacancyRow, list[str]]] = []
    vacancies_paired = await repo.paired_with("vacancy", [v.vacancy_id for v in vacancies])
    for vacancy in vacancies:
        room = settings.top_k_per_vacancy - vacancy.open_matches
        if vacancy.status != "open" or room <= 0:
            continue
        started = time.perf_counter()
        best = index.match_vacancy(
            vacancy.profile(), settings.min_score, room, vacancies_paired[vacancy.vacancy_id]
        )
        SCORING_SECONDS.labels("vacancy").observe(time.perf_counter() - started)
        by_vacancy.append((vacancy, [student_id for student_id, _ in best]))
    vacancy_rows = await repo.vacancies(sorted({vacancy_id for _, vacancy_id, _ in found}))
    student_rows = await repo.students(sorted({s for _, ids in by_vacancy for s in ids}))
    candidates = [
        _Candidate(student, vacancy_rows[vacancy_id], _origin(student), trigger)
        for student, vacancy_id, trigger in found
        if vacancy_id in vacancy_rows
    ]
    for vacancy, ids in by_vacancy:
        candidates += [
            _Candidate(student_rows[s], vacancy, _origin(vacancy), "vacancy")
            for s in ids
            if s in student_rows
        ]
    return candidates


async def _write(
    uow: MatchingUnitOfWork,
    keeper: IndexKeeper,
    settings: MatchingSettings,
    key: bytes,
    candidates: list[_Candidate],
) -> int:
    repo = uow.matching
    rooms = await repo.lock_rooms(sorted({c.vacancy.vacancy_id for c in candidates}))
    alive = await repo.hold_students(sorted({c.student.student_id for c in candidates}))
    taken: dict[str, int] = {}
    chosen: list[tuple[_Candidate, MatchFound]] = []
    seen: set[tuple[str, str]] = set()
    for candidate in candidates:
        student, vacancy = candidate.student, candidate.vacancy
        pair = (student.student_id, vacancy.vacancy_id)
        if student.student_id not in alive or vacancy.vacancy_id not in rooms or pair in seen:
            continue  # erased or closed meanwhile (its erasure or closing withdraws what it sees), or twice
        if rooms[vacancy.vacancy_id] + taken.get(vacancy.vacancy_id, 0) >= settings.top_k_per_vacancy:
            continue
        seen.add(pair)
        taken[vacancy.vacancy_id] = taken.get(vacancy.vacancy_id, 0) + 1
        chosen.append((candidate, _match(student, vacancy, key)))
    inserted = await repo.insert_matches([match_values(match) for _, match in chosen])
    made: dict[str, int] = {}
    pairs: dict[tuple[str, str], Origin] = {}
    for candidate, match in chosen:
        if match.match_id not in inserted:
            continue  # another decision made the pair the same moment
        made[match.vacancy_id] = made.get(match.vacancy_id, 0) + 1
        uow.emit(
            MATCHES.name,
            candidate.origin.event(ce_type("match.found"), SOURCE, dump(match), match.student_id),
        )
        MATCHES_FOUND.labels(candidate.trigger).inc()
        if match.school_id is not None:
            pairs.setdefault((match.organisation_id, match.school_id), candidate.origin)
    await repo.add_rooms(made)
    filled = [v for v, count in made.items() if rooms[v] + count >= settings.top_k_per_vacancy]
    for vacancy_id in filled:
        keeper.index.set_full(vacancy_id, True)

    def room_again() -> None:  # a rollback undoes what this decision made full
        for vacancy_id in filled:
            keeper.index.set_full(vacancy_id, False)

    uow.on_rollback(room_again)
    for (company_id, school_id), origin in sorted(pairs.items()):
        await _maybe_propose(uow, settings, company_id, school_id, origin)
    return sum(made.values())


def _match(student: StudentRow, vacancy: VacancyRow, key: bytes) -> MatchFound:
    result = domain.assess(student.profile(), vacancy.profile())
    return MatchFound(
        match_id=domain.match_id(student.student_id, vacancy.vacancy_id, key),
        student_id=student.student_id,
        vacancy_id=vacancy.vacancy_id,
        organisation_id=vacancy.organisation_id,
        school_id=student.school_id,
        score=round(result.score, 6),
        reasons=domain.reasons(result),
    )


async def _maybe_propose(
    uow: MatchingUnitOfWork, settings: MatchingSettings, company_id: str, school_id: str, origin: Origin
) -> None:
    repo = uow.matching
    if await repo.partnership_between(company_id, school_id) is not None:
        return
    # The match that reached the threshold proposes it, on the matches up to it (a batch may make more).
    first = await repo.pair_matches(company_id, school_id, first=settings.partnership_min_matches)
    if len(first) >= settings.partnership_min_matches:
        await propose(uow, company_id, school_id, "system", first, origin)


async def propose(
    uow: MatchingUnitOfWork,
    company_id: str,
    school_id: str,
    proposed_by: str,
    matches: list[MatchRow],
    origin: Origin,
) -> PartnershipRow | None:
    basis = domain.partnership_basis([list(m.reasons.get("matched_skills", [])) for m in matches])
    row = PartnershipRow(
        partnership_id=domain.partnership_id(company_id, school_id),
        company_id=company_id,
        school_id=school_id,
        status="proposed",
        basis=basis,
        proposed_by=proposed_by,
        company_accepted=proposed_by == company_id,
        school_accepted=proposed_by == school_id,
        created_at=now(),
    )
    if not await uow.matching.add_partnership(row):
        return None  # proposed by another decision the same moment: once is enough
    data = {
        "partnership_id": row.partnership_id,
        "company_id": company_id,
        "school_id": school_id,
        "basis": basis,
    }
    uow.emit(
        PARTNERSHIPS_TOPIC.name,
        origin.event(ce_type("partnership.proposed"), SOURCE, data, row.partnership_id),
    )
    PARTNERSHIPS.labels("proposed").inc()
    return row
