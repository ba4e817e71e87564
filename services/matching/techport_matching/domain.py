"""The matching rules of contract section 2, per pair, in plain Python. This is the reference the vectorised
index (index.py) must agree with, and what explains a match (`reasons`).

Eligible: vacancy open; its kind among what the student seeks; the student's level among the vacancy's levels
(or levels empty); distance within the student's max_distance_km when both locations are known; the student
consented to matching.

Score in 0..1: the fraction of required skills covered (all of them when none are required) decides; within
the same coverage, a tiebreak of preferred skills covered and proximity orders. The tiebreak weighs EPSILON,
less than the smallest difference between two coverages (with at most MAX_REQUIRED required skills), so
covering more required skills always ranks higher.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from techport_shared.errors import Refused
from techport_shared.geo import haversine_km
from techport_shared.identity import Identity

MAX_REQUIRED = 30
EPSILON = 1.0 / (2 * MAX_REQUIRED * MAX_REQUIRED)  # below 1/(30*29), the smallest gap between coverages


@dataclass(frozen=True)
class StudentProfile:
    student_id: str
    school_id: str | None
    level: str
    seeking: frozenset[str]
    skills: frozenset[str]
    lat: float | None
    lon: float | None
    max_distance_km: float
    consent_matching: bool


@dataclass(frozen=True)
class VacancyProfile:
    vacancy_id: str
    organisation_id: str
    kind: str
    levels: frozenset[str]
    required: tuple[str, ...]
    preferred: tuple[str, ...]
    lat: float | None
    lon: float | None
    open: bool = True


@dataclass(frozen=True)
class Assessment:
    score: float
    matched: tuple[str, ...]
    missing: tuple[str, ...]
    preferred_matched: tuple[str, ...]
    distance_km: float | None


def distance_km(student: StudentProfile, vacancy: VacancyProfile) -> float | None:
    if student.lat is None or student.lon is None or vacancy.lat is None or vacancy.lon is None:
        return None
    return haversine_km(student.lat, student.lon, vacancy.lat, vacancy.lon)


def eligible(student: StudentProfile, vacancy: VacancyProfile) -> bool:
    if not (vacancy.open and student.consent_matching and vacancy.kind in student.seeking):
        return False
    if vacancy.levels and student.level not in vacancy.levels:
        return False
    distance = distance_km(student, vacancy)
    return distance is None or distance <= student.max_distance_km


def score(coverage: float, preferred_fraction: float, proximity: float) -> float:
    return (1.0 - EPSILON) * coverage + EPSILON * (0.5 * preferred_fraction + 0.5 * proximity)


def assess(student: StudentProfile, vacancy: VacancyProfile) -> Assessment:
    matched = tuple(s for s in vacancy.required if s in student.skills)
    missing = tuple(s for s in vacancy.required if s not in student.skills)
    preferred = tuple(s for s in vacancy.preferred if s in student.skills)
    coverage = len(matched) / len(vacancy.required) if vacancy.required else 1.0
    preferred_fraction = len(preferred) / len(vacancy.preferred) if vacancy.preferred else 0.0
    distance = distance_km(student, vacancy)
    proximity = 0.0 if distance is None else max(0.0, 1.0 - distance / student.max_distance_km)
    return Assessment(score(coverage, preferred_fraction, proximity), matched, missing, preferred, distance)


def _ranked(
    pairs: Iterable[tuple[str, StudentProfile, VacancyProfile]], min_score: float, k: int
) -> list[tuple[str, float]]:
    found = []
    for key, student, vacancy in pairs:
        if eligible(student, vacancy):
            result = assess(student, vacancy)
            if result.score >= min_score:
                found.append((key, result.score))
    found.sort(key=lambda pair: (-pair[1], pair[0]))
    return found[:k]


def reference_matches_for_vacancy(
    vacancy: VacancyProfile, students: list[StudentProfile], min_score: float, k: int
) -> list[tuple[str, float]]:
    """The plain per-pair implementation: (student_id, score), best first, ties by student id."""
    return _ranked(((s.student_id, s, vacancy) for s in students), min_score, k)


def reference_matches_for_student(
    student: StudentProfile, vacancies: list[VacancyProfile], min_score: float, k: int
) -> list[tuple[str, float]]:
    """The plain per-pair implementation: (vacancy_id, score), best first, ties by vacancy id."""
    return _ranked(((v.vacancy_id, student, v) for v in vacancies), min_score, k)


def match_id(student_id: str, vacancy_id: str, key: bytes) -> str:
    """One id per pair, whoever finds it and however often: the pair is matched at most once. Keyed, so that
    the id a company sees for its candidate is an opaque reference: no one can derive it from a student id."""
    return "m-" + hmac.new(key, f"{student_id}\x00{vacancy_id}".encode(), hashlib.sha256).hexdigest()[:32]


def partnership_id(company_id: str, school_id: str) -> str:
    return "p-" + hashlib.sha256(f"{company_id}\x00{school_id}".encode()).hexdigest()[:32]


def reasons(result: Assessment) -> dict[str, Any]:
    """Why a pair matched, as `match.found` says it: which required skills matched and which are missing."""
    return {
        "matched_skills": list(result.matched),
        "missing_skills": list(result.missing),
        "preferred_matched": list(result.preferred_matched),
        "distance_km": None if result.distance_km is None else round(result.distance_km, 2),
        "level_ok": True,
        "kind_ok": True,
    }


def partnership_basis(matched_skills: list[list[str]]) -> dict[str, Any]:
    shared = sorted({skill for skills in matched_skills for skill in skills})
    return {"matches": len(matched_skills), "shared_skills": shared[:25]}


@dataclass(frozen=True)
class Party:
    organisation_id: str
    kind: str | None  # None: not known to matching


def check_proposal(actor: Identity, company: Party, school: Party, existing: bool) -> str:
    """Who may propose a partnership between which two; returns who proposes ("operator" or the side)."""
    if not (actor.is_operator or actor.organisation_id in (company.organisation_id, school.organisation_id)):
        raise Refused.of(
            "forbidden", "organisation_id", "an organisation proposes partnerships only for itself"
        )
    if company.kind != "company":
        raise Refused.of("invalid", "company_id", f"{company.organisation_id} is not a known company")
    if school.kind != "school":
        raise Refused.of("invalid", "school_id", f"{school.organisation_id} is not a known school")
    if existing:
        raise Refused.of("conflict", "partnership", "these two already have a partnership")
    return "operator" if actor.is_operator else str(actor.organisation_id)


def accepting_side(actor: Identity, named: str | None, company_id: str, school_id: str) -> str:
    """Which side accepts: an organisation for itself, an operator for the side it names."""
    side = named if actor.is_operator else actor.organisation_id
    if side is None:
        raise Refused.of("invalid", "organisation_id", "an operator names the side it accepts for")
    if side not in (company_id, school_id):
        raise Refused.of(
            "forbidden", "organisation_id", "only the company or the school of a partnership accepts it"
        )
    return side
