"""The in-memory matching index: skills as integer ids in inverted postings, everything a hard filter needs in
numpy arrays, filters as vectorised masks, top-k by partial sort. No per-pair Python loop on the hot path.

Writes are incremental: a changed student or vacancy takes a new slot and its old slot is switched off (its
stale postings are masked out by `active`). A rebuild from the database reclaims stale slots: at every start,
and by hand with `techport matching reindex --service URL`; `stale_fraction` tells how much there is to gain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from techport_shared.geo import EARTH_RADIUS_KM

from techport_matching.domain import EPSILON, KINDS, LEVELS, StudentProfile, VacancyProfile

LEVEL_BIT = {level: 1 << i for i, level in enumerate(LEVELS)}
KIND_BIT = {kind: 1 << i for i, kind in enumerate(KINDS)}
_FLOAT = np.float64


class SkillIds:
    """Skill code -> dense integer id, growing as new codes (free text included) appear."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def id(self, code: str) -> int:
        found = self._ids.get(code)
        if found is None:
            found = self._ids[code] = len(self._ids)
        return found

    def known(self, codes: Iterable[str]) -> list[int]:
        """Ids of codes already seen; unseen codes are in nobody's postings, so they cannot match."""
        return [i for i in (self._ids.get(c) for c in codes) if i is not None]

    def __len__(self) -> int:
        return len(self._ids)


class Postings:
    """One growable int32 array of slots per skill id."""

    def __init__(self) -> None:
        self._arrays: list[npt.NDArray[np.int32]] = []
        self._sizes: list[int] = []

    def add(self, skill: int, slot: int) -> None:
        while skill >= len(self._arrays):
            self._arrays.append(np.empty(4, dtype=np.int32))
            self._sizes.append(0)
        size = self._sizes[skill]
        array = self._arrays[skill]
        if size == len(array):
            array = self._arrays[skill] = np.resize(array, size * 2)
        array[size] = slot
        self._sizes[skill] = size + 1

    def add_many(self, skill: int, slots: npt.NDArray[np.int32]) -> None:
        while skill >= len(self._arrays):
            self._arrays.append(np.empty(4, dtype=np.int32))
            self._sizes.append(0)
        size = self._sizes[skill]
        needed = size + len(slots)
        if needed > len(self._arrays[skill]):
            self._arrays[skill] = np.resize(self._arrays[skill], max(needed, 2 * len(self._arrays[skill])))
        self._arrays[skill][size:needed] = slots
        self._sizes[skill] = needed

    def counts(self, skills: list[int], n: int) -> npt.NDArray[np.int64]:
        """How many of `skills` each slot 0..n-1 has."""
        parts = [self._arrays[s][: self._sizes[s]] for s in skills if s < len(self._arrays)]
        if not parts:
            return np.zeros(n, dtype=np.int64)
        return np.bincount(np.concatenate(parts), minlength=n)[:n]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)


class _Columns:
    """Growable parallel arrays, one slot per record version."""

    def __init__(self, spec: dict[str, tuple[type, object]], capacity: int = 1024) -> None:
        self._spec = spec
        self.size = 0
        self.capacity = capacity
        self._arrays: dict[str, npt.NDArray[Any]] = {
            name: np.full(capacity, fill, dtype=dtype) for name, (dtype, fill) in spec.items()
        }

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self._arrays[name]

    def grow_to(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, self.capacity * 2)
        for name, (dtype, fill) in self._spec.items():
            grown: npt.NDArray[Any] = np.full(capacity, fill, dtype=dtype)
            grown[: self.size] = self._arrays[name][: self.size]
            self._arrays[name] = grown
        self.capacity = capacity

    def nbytes(self) -> int:
        return sum(array.nbytes for array in self._arrays.values())


KM_PER_DEGREE_LATITUDE = np.pi / 180 * EARTH_RADIUS_KM


def _may_be_within(lats: Any, lat: float, max_km: Any) -> npt.NDArray[np.bool_]:
    """A cheap necessary condition before the haversine: the great-circle distance is at least the
    difference in latitude (R·|Δφ|). Unknown locations (NaN) pass; the margin absorbs rounding."""
    result: npt.NDArray[np.bool_] = ~(np.abs(lats - lat) * KM_PER_DEGREE_LATITUDE > max_km + 1e-6)
    return result


def _haversine(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> npt.NDArray[np.float64]:
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi = phi2 - phi1
    dlambda = np.radians(np.subtract(lon2, lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlambda / 2) ** 2
    result: npt.NDArray[np.float64] = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return result


def _top(
    ids: list[str], slots: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], k: int, skip: set[str]
):
    """Best first, ties by id, without `skip`: partial sort, then an exact order of the few that qualify."""
    if len(slots) == 0 or k <= 0:
        return []
    want = min(len(slots), k + len(skip))
    if want < len(slots):
        kth = np.partition(scores, len(scores) - want)[len(scores) - want]
        keep = scores >= kth  # ties at the boundary stay in, so the id order decides as the reference does
        slots, scores = slots[keep], scores[keep]
    ranked = sorted(zip((ids[s] for s in slots), scores.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
    return [(i, s) for i, s in ranked if i not in skip][:k]


@dataclass(frozen=True)
class IndexStats:
    students: int
    vacancies: int
    skills: int
    nbytes: int


class MatchingIndex:
    def __init__(self) -> None:
        self.skills = SkillIds()
        self._students = _Columns(
            {
                "active": (np.bool_, False),
                "consent": (np.bool_, False),
                "level": (np.uint16, 0),
                "seeking": (np.uint8, 0),
                "lat": (_FLOAT, np.nan),
                "lon": (_FLOAT, np.nan),
                "max_km": (_FLOAT, 0.0),
            }
        )
        self._student_ids: list[str] = []
        self._student_slot: dict[str, int] = {}
        # What each live entry was built from, so catching up with the database skips what is unchanged.
        self._student_hash: dict[str, int] = {}
        self._vacancy_hash: dict[str, int] = {}
        self._student_skills = Postings()
        self._vacancies = _Columns(
            {
                "active": (np.bool_, False),
                "kind": (np.uint8, 0),
                "levels": (np.uint16, 0),
                "n_required": (np.int32, 0),
                "n_preferred": (np.int32, 0),
                "lat": (_FLOAT, np.nan),
                "lon": (_FLOAT, np.nan),
                "full": (np.bool_, False),
            }
        )
        self._vacancy_ids: list[str] = []
        self._vacancy_slot: dict[str, int] = {}
        self._required = Postings()
        self._preferred = Postings()
        self.profiles: dict[str, VacancyProfile] = {}

    # --- writes -------------------------------------------------------------------------------------------
    def upsert_student(self, student: StudentProfile) -> None:
        digest = hash(student)
        if self._student_hash.get(student.student_id) == digest:
            return
        self.remove_student(student.student_id)
        self._student_hash[student.student_id] = digest
        cols = self._students
        slot = cols.size
        cols.grow_to(slot + 1)
        cols.size += 1
        cols["active"][slot] = True
        cols["consent"][slot] = student.consent_matching
        cols["level"][slot] = LEVEL_BIT.get(student.level, 0)
        cols["seeking"][slot] = sum(KIND_BIT.get(k, 0) for k in student.seeking)
        cols["lat"][slot] = np.nan if student.lat is None else student.lat
        cols["lon"][slot] = np.nan if student.lon is None else student.lon
        cols["max_km"][slot] = student.max_distance_km
        self._student_ids.append(student.student_id)
        self._student_slot[student.student_id] = slot
        for code in student.skills:
            self._student_skills.add(self.skills.id(code), slot)

    def remove_student(self, student_id: str) -> None:
        self._student_hash.pop(student_id, None)
        slot = self._student_slot.pop(student_id, None)
        if slot is not None:
            self._students["active"][slot] = False

    def upsert_vacancy(self, vacancy: VacancyProfile) -> None:
        digest = hash(vacancy)
        if self._vacancy_hash.get(vacancy.vacancy_id) == digest:
            return
        self.remove_vacancy(vacancy.vacancy_id)
        if not vacancy.open:
            return
        self._vacancy_hash[vacancy.vacancy_id] = digest
        cols = self._vacancies
        slot = cols.size
        cols.grow_to(slot + 1)
        cols.size += 1
        cols["active"][slot] = True
        cols["kind"][slot] = KIND_BIT.get(vacancy.kind, 0)
        cols["levels"][slot] = sum(LEVEL_BIT.get(level, 0) for level in vacancy.levels)
        cols["n_required"][slot] = len(vacancy.required)
        cols["n_preferred"][slot] = len(vacancy.preferred)
        cols["lat"][slot] = np.nan if vacancy.lat is None else vacancy.lat
        cols["lon"][slot] = np.nan if vacancy.lon is None else vacancy.lon
        self._vacancy_ids.append(vacancy.vacancy_id)
        self._vacancy_slot[vacancy.vacancy_id] = slot
        self.profiles[vacancy.vacancy_id] = vacancy
        for code in vacancy.required:
            self._required.add(self.skills.id(code), slot)
        for code in vacancy.preferred:
            self._preferred.add(self.skills.id(code), slot)

    def remove_vacancy(self, vacancy_id: str) -> None:
        self._vacancy_hash.pop(vacancy_id, None)
        slot = self._vacancy_slot.pop(vacancy_id, None)
        self.profiles.pop(vacancy_id, None)
        if slot is not None:
            self._vacancies["active"][slot] = False

    def load_students(self, students: list[StudentProfile]) -> None:
        """Bulk load (start-up, reindex, benchmarks): the same result as upserting one by one, faster."""
        for student in students:
            self.remove_student(student.student_id)
        cols = self._students
        start, n = cols.size, len(students)
        cols.grow_to(start + n)
        end = start + n
        cols["active"][start:end] = True
        cols["consent"][start:end] = [s.consent_matching for s in students]
        cols["level"][start:end] = [LEVEL_BIT.get(s.level, 0) for s in students]
        cols["seeking"][start:end] = [sum(KIND_BIT.get(k, 0) for k in s.seeking) for s in students]
        cols["lat"][start:end] = [np.nan if s.lat is None else s.lat for s in students]
        cols["lon"][start:end] = [np.nan if s.lon is None else s.lon for s in students]
        cols["max_km"][start:end] = [s.max_distance_km for s in students]
        cols.size = end
        by_skill: dict[int, list[int]] = {}
        for offset, student in enumerate(students):
            slot = start + offset
            self._student_ids.append(student.student_id)
            self._student_slot[student.student_id] = slot
            self._student_hash[student.student_id] = hash(student)
            for code in student.skills:
                by_skill.setdefault(self.skills.id(code), []).append(slot)
        for skill, slots in by_skill.items():
            self._student_skills.add_many(skill, np.asarray(slots, dtype=np.int32))

    def stale_fraction(self) -> float:
        """Share of slots that are superseded or removed: the service rebuilds the index when it grows."""
        slots = self._students.size + self._vacancies.size
        live = len(self._student_slot) + len(self._vacancy_slot)
        return 0.0 if slots == 0 else 1.0 - live / slots

    def set_full(self, vacancy_id: str, full: bool) -> None:
        """A vacancy with its maximum of matches takes no more from new students."""
        slot = self._vacancy_slot.get(vacancy_id)
        if slot is not None:
            self._vacancies["full"][slot] = full

    # --- reads --------------------------------------------------------------------------------------------
    def stats(self) -> IndexStats:
        nbytes = (
            self._students.nbytes()
            + self._vacancies.nbytes()
            + self._student_skills.nbytes()
            + self._required.nbytes()
            + self._preferred.nbytes()
        )
        return IndexStats(len(self._student_slot), len(self._vacancy_slot), len(self.skills), nbytes)

    def match_vacancy(
        self, vacancy: VacancyProfile, min_score: float, k: int, skip: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """The best students for a vacancy: (student_id, score), best first."""
        cols = self._students
        n = cols.size
        if n == 0 or not vacancy.open:
            return []
        required = self.skills.known(vacancy.required)
        n_required = len(vacancy.required)
        if n_required:
            matched = self._student_skills.counts(required, n)
            coverage = matched / n_required
        else:
            coverage = np.ones(n)
        # Upper bound of the score (full tiebreak): who cannot reach min_score is out before any geometry.
        mask = (1.0 - EPSILON) * coverage + EPSILON >= min_score
        mask &= cols["active"][:n] & cols["consent"][:n]
        mask &= (cols["seeking"][:n] & KIND_BIT.get(vacancy.kind, 0)) != 0
        if vacancy.levels:
            wanted = sum(LEVEL_BIT.get(level, 0) for level in vacancy.levels)
            mask &= (cols["level"][:n] & wanted) != 0
        slots = np.flatnonzero(mask)
        if len(slots) == 0:
            return []
        max_km = cols["max_km"][slots]
        if vacancy.lat is not None and vacancy.lon is not None:
            near = _may_be_within(cols["lat"][slots], vacancy.lat, max_km)
            slots, max_km = slots[near], max_km[near]
        distance = np.full(len(slots), np.nan)
        if vacancy.lat is not None and vacancy.lon is not None:
            lat, lon = cols["lat"][slots], cols["lon"][slots]
            distance = _haversine(lat, lon, vacancy.lat, vacancy.lon)
            within = np.isnan(distance) | (distance <= max_km)
            slots, distance, max_km = slots[within], distance[within], max_km[within]
        preferred = self.skills.known(vacancy.preferred)
        if vacancy.preferred:
            preferred_fraction = self._student_skills.counts(preferred, n)[slots] / len(vacancy.preferred)
        else:
            preferred_fraction = np.zeros(len(slots))
        proximity = np.where(np.isnan(distance), 0.0, np.maximum(0.0, 1.0 - distance / max_km))
        scores = (1.0 - EPSILON) * coverage[slots] + EPSILON * (0.5 * preferred_fraction + 0.5 * proximity)
        keep = scores >= min_score
        return _top(self._student_ids, slots[keep], scores[keep], k, skip or set())

    def match_student(
        self,
        student: StudentProfile,
        min_score: float,
        k: int,
        skip: set[str] | None = None,
    ) -> list[tuple[str, float]]:
        """The best open vacancies for a student: (vacancy_id, score), best first; full vacancies are out."""
        cols = self._vacancies
        n = cols.size
        if n == 0 or not student.consent_matching:
            return []
        skills = self.skills.known(student.skills)
        n_required = cols["n_required"][:n]
        matched = self._required.counts(skills, n)
        coverage = np.where(n_required > 0, matched / np.maximum(n_required, 1), 1.0)
        mask = (1.0 - EPSILON) * coverage + EPSILON >= min_score
        mask &= cols["active"][:n] & ~cols["full"][:n]
        seeking = sum(KIND_BIT.get(kind, 0) for kind in student.seeking)
        mask &= (cols["kind"][:n] & seeking) != 0
        levels = cols["levels"][:n]
        mask &= (levels == 0) | ((levels & LEVEL_BIT.get(student.level, 0)) != 0)
        slots = np.flatnonzero(mask)
        if len(slots) == 0:
            return []
        if student.lat is not None and student.lon is not None:
            slots = slots[_may_be_within(cols["lat"][slots], student.lat, student.max_distance_km)]
        distance = np.full(len(slots), np.nan)
        if student.lat is not None and student.lon is not None:
            distance = _haversine(student.lat, student.lon, cols["lat"][slots], cols["lon"][slots])
            within = np.isnan(distance) | (distance <= student.max_distance_km)
            slots, distance = slots[within], distance[within]
        n_preferred = cols["n_preferred"][slots]
        preferred_matched = self._preferred.counts(skills, n)[slots]
        preferred_fraction = np.where(n_preferred > 0, preferred_matched / np.maximum(n_preferred, 1), 0.0)
        proximity = np.where(
            np.isnan(distance), 0.0, np.maximum(0.0, 1.0 - distance / student.max_distance_km)
        )
        scores = (1.0 - EPSILON) * coverage[slots] + EPSILON * (0.5 * preferred_fraction + 0.5 * proximity)
        keep = scores >= min_score
        return _top(self._vacancy_ids, slots[keep], scores[keep], k, skip or set())
