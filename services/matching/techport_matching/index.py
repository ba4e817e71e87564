"""The in-memory matching index: skills as integer ids in inverted postings (the most common skills also as
bits, counted by popcount), everything a hard filter needs in numpy arrays, filters as vectorised masks,
distances once per place (locations are postcode areas), top-k by partial sort. No per-pair Python loop on
the hot path. A query first cuts to the candidates that hold enough of the required skills to reach the
minimum score, and computes the rest of the score only for them.

Writes are incremental: a changed student or vacancy takes a new slot and its old slot is switched off (its
stale postings are masked out by `active`). A rebuild from the database reclaims stale slots: at every start,
and by hand with `techport matching reindex --service URL`; `stale_fraction` tells how much there is to gain.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from techport_shared.geo import EARTH_RADIUS_KM

from techport_matching.domain import EPSILON, KINDS, LEVELS, MAX_REQUIRED, StudentProfile, VacancyProfile

LEVEL_BIT = {level: 1 << i for i, level in enumerate(LEVELS)}
UNKNOWN_LEVEL = 1 << 15  # a student's level we do not know: only a vacancy open to any level takes them
ANY_LEVEL = 0xFFFF
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
    """Which slots have which skill: one growable int32 array of slots per skill id (in slot order, as slots
    only grow). The most common skills are also bits of one uint64 per slot: counting them for a query is an
    AND and a popcount over the slots, not a pass over postings nearly as long as the index."""

    BITS = 64

    def __init__(self, common_after: int = 512) -> None:
        self._arrays: list[npt.NDArray[np.int32]] = []
        self._sizes: list[int] = []
        self._common_after = common_after  # a skill that this many slots have gets a bit, while bits last
        self._bit: dict[int, int] = {}
        self._bits: npt.NDArray[np.uint64] = np.zeros(1024, dtype=np.uint64)

    def _posting(self, skill: int) -> None:
        while skill >= len(self._arrays):
            self._arrays.append(np.empty(4, dtype=np.int32))
            self._sizes.append(0)

    def _room_for(self, slot: int) -> None:
        if slot >= len(self._bits):
            grown = np.zeros(max(slot + 1, 2 * len(self._bits)), dtype=np.uint64)
            grown[: len(self._bits)] = self._bits
            self._bits = grown

    def add(self, skill: int, slot: int) -> None:
        self.add_many(skill, np.array([slot], dtype=np.int32))

    def add_many(self, skill: int, slots: npt.NDArray[np.int32]) -> None:
        """Record that `slots` (ascending, above every slot recorded so far) have `skill`."""
        self._posting(skill)
        size = self._sizes[skill]
        needed = size + len(slots)
        if needed > len(self._arrays[skill]):
            self._arrays[skill] = np.resize(self._arrays[skill], max(needed, 2 * len(self._arrays[skill])))
        self._arrays[skill][size:needed] = slots
        self._sizes[skill] = needed
        if len(slots):
            self._room_for(int(slots[-1]))
        bit = self._bit.get(skill)
        if bit is not None:
            self._bits[slots] |= np.uint64(1 << bit)
        elif needed >= self._common_after and len(self._bit) < self.BITS:
            bit = self._bit[skill] = len(self._bit)
            self._bits[self._arrays[skill][:needed]] |= np.uint64(1 << bit)

    def _split(self, skills: list[int]) -> tuple[np.uint64, list[int]]:
        """The bit mask of the common ones among `skills`, and the others."""
        mask, rare = 0, []
        for skill in skills:
            bit = self._bit.get(skill)
            if bit is None:
                rare.append(skill)
            else:
                mask |= 1 << bit
        return np.uint64(mask), rare

    def counts(self, skills: list[int], n: int) -> npt.NDArray[np.integer[Any]]:
        """How many of `skills` each slot 0..n-1 has."""
        mask, rare = self._split(skills)
        parts = [self._arrays[s][: self._sizes[s]] for s in rare if s < len(self._arrays)]
        found = np.bincount(np.concatenate(parts), minlength=n)[:n] if parts else None
        if mask:
            common = np.bitwise_count(self._bits[:n] & mask)
            return common if found is None else found + common
        return np.zeros(n, dtype=np.int64) if found is None else found

    def count_at(
        self, skills: list[int], slots: npt.NDArray[np.int64], n: int
    ) -> npt.NDArray[np.integer[Any]]:
        """How many of `skills` each of `slots` has: the common ones by bit; the others by a binary search
        per slot when the slots are few, else by a count over every slot."""
        mask, rare = self._split(skills)
        found: npt.NDArray[np.integer[Any]] = (
            np.bitwise_count(self._bits[slots] & mask) if mask else np.zeros(len(slots), dtype=np.uint8)
        )
        if rare and len(slots) * len(rare) * 16 >= n:
            return self.counts(rare, n)[slots] + found
        for skill in rare:
            if skill >= len(self._arrays) or self._sizes[skill] == 0:
                continue
            postings = self._arrays[skill][: self._sizes[skill]]
            at = np.searchsorted(postings, slots)
            found = found + (postings[np.minimum(at, len(postings) - 1)] == slots)
        return found

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays) + self._bits.nbytes


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


class Places:
    """The distinct locations of students and vacancies, and the distances from a point to each of them.

    Locations come from postcode areas: a few thousand places for any number of people. So a query computes
    the great-circle distance once per place (and keeps it for the points asked about most recently, such as
    an employer's site), then looks each person's distance up, instead of once per person.
    """

    UNKNOWN = 0  # the place of whoever has no location: its distance is NaN, which every filter lets pass

    def __init__(self, cached_points: int = 512) -> None:
        self._ids: dict[tuple[float, float], int] = {}
        # Longitude in degrees, latitude in radians and its cosine: what every distance from a place needs.
        self._columns = _Columns(
            {"lon": (_FLOAT, np.nan), "phi": (_FLOAT, np.nan), "cos_phi": (_FLOAT, np.nan)}, capacity=256
        )
        self._columns.size = 1  # place 0 is UNKNOWN
        self._rows: OrderedDict[tuple[float, float], npt.NDArray[np.float64]] = OrderedDict()
        self._cached_points = cached_points

    def id(self, lat: float | None, lon: float | None) -> int:
        if lat is None or lon is None:
            return self.UNKNOWN
        found = self._ids.get((lat, lon))
        if found is None:
            columns = self._columns
            found = self._ids[(lat, lon)] = columns.size
            columns.grow_to(found + 1)
            phi = np.radians(lat)
            columns["lon"][found], columns["phi"][found], columns["cos_phi"][found] = lon, phi, np.cos(phi)
            columns.size += 1
        return found

    def distances_from(self, lat: float, lon: float) -> npt.NDArray[np.float64]:
        """Great-circle distance in km from (lat, lon) to every place, by place id."""
        key, size = (lat, lon), self._columns.size
        row = self._rows.pop(key, None)
        if row is None or len(row) < size:
            start = 0 if row is None else len(row)
            more = self._distances(slice(start, size), lat, lon)
            row = more if row is None else np.concatenate([row, more])
        self._rows[key] = row  # the most recently used last
        if len(self._rows) > self._cached_points:
            self._rows.popitem(last=False)
        return row

    def _distances(self, places: slice, lat: float, lon: float) -> npt.NDArray[np.float64]:
        """Great-circle distances from (lat, lon) to `places`: `haversine_km`'s formula, operation for
        operation (so the same to the last bit), each place's own terms computed once, when it was added."""
        phi = np.radians(lat)
        s_phi = np.sin((phi - self._columns["phi"][places]) / 2)
        s_lambda = np.sin(np.radians(lon - self._columns["lon"][places]) / 2)
        a = s_phi * s_phi + self._columns["cos_phi"][places] * np.cos(phi) * (s_lambda * s_lambda)
        result: npt.NDArray[np.float64] = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))
        return result

    def nbytes(self) -> int:
        return self._columns.nbytes() + sum(row.nbytes for row in self._rows.values())


def _top(
    ids: list[str], slots: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], k: int, skip: set[str]
) -> list[tuple[str, float]]:
    """Best first, ties by id, without `skip`: partial sort, then an exact order of the few that qualify."""
    if len(slots) == 0 or k <= 0:
        return []
    want = min(len(slots), k + len(skip))
    if want < len(slots):
        kth = np.partition(scores, len(scores) - want)[len(scores) - want]
        keep = scores >= kth  # ties at the boundary stay in, so the id order decides as the reference does
        slots, scores = slots[keep], scores[keep]
    # (-score, id) tuples sort in C: best first, equal scores by id.
    ranked = sorted(zip((-scores).tolist(), [ids[s] for s in slots.tolist()], strict=True))
    return [(i, -negative) for negative, i in ranked if i not in skip][:k]


def _scores(coverage: Any, preferred_fraction: Any, proximity: Any, count: int) -> npt.NDArray[np.float64]:
    """domain.score over arrays (or scalars where every slot has the same value), in its order of operations,
    so the scores are the reference's to the last bit."""
    scores = (1.0 - EPSILON) * coverage + EPSILON * (0.5 * preferred_fraction + 0.5 * proximity)
    return np.full(count, scores) if np.ndim(scores) == 0 else scores


def _fraction(part: Any, whole: npt.NDArray[np.int32], if_none: float) -> npt.NDArray[np.float64]:
    """part / whole, `if_none` where whole is 0."""
    return np.divide(part, whole, out=np.full(len(whole), if_none), where=whole > 0)


def _least_matched(n_required: int, min_score: float) -> int | None:
    """The fewest required skills that can still reach `min_score` (with the whole tiebreak), computed as the
    score is, so the cut is exact; None when no number can."""
    for matched in range(n_required + 1):
        coverage = matched / n_required if n_required else 1.0
        if (1.0 - EPSILON) * coverage + EPSILON >= min_score:
            return matched
    return None


@dataclass(frozen=True)
class IndexStats:
    students: int
    vacancies: int
    skills: int
    nbytes: int


class MatchingIndex:
    def __init__(self, common_skill_after: int = 512) -> None:
        self.skills = SkillIds()
        self.places = Places()
        self._students = _Columns(
            {
                "active": (np.bool_, False),
                "consent": (np.bool_, False),
                "level": (np.uint16, 0),
                "seeking": (np.uint8, 0),
                "place": (np.int32, Places.UNKNOWN),
                "max_km": (_FLOAT, 0.0),
            }
        )
        self._student_ids: list[str] = []
        self._student_slot: dict[str, int] = {}
        # What each live entry was built from, so catching up with the database skips what is unchanged.
        self._student_hash: dict[str, int] = {}
        self._vacancy_hash: dict[str, int] = {}
        self._student_skills = Postings(common_skill_after)
        self._vacancies = _Columns(
            {
                "active": (np.bool_, False),
                "kind": (np.uint8, 0),
                # The levels it accepts as LEVEL_BIT bits; every bit (the unknown level's too) if any level.
                "levels": (np.uint16, 0),
                # Open to new students: live and not full.
                "taking": (np.bool_, False),
                "n_required": (np.int32, 0),
                "n_preferred": (np.int32, 0),
                "place": (np.int32, Places.UNKNOWN),
            }
        )
        self._vacancy_ids: list[str] = []
        self._vacancy_slot: dict[str, int] = {}
        self._required = Postings(common_skill_after)
        self._preferred = Postings(common_skill_after)
        self.profiles: dict[str, VacancyProfile] = {}
        self._least_matched_tables: dict[float, npt.NDArray[np.int64]] = {}
        self._least_matched_slots: dict[float, npt.NDArray[np.int64]] = {}
        self._most_required = 0

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
        cols["place"][slot] = self.places.id(student.lat, student.lon)
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
        cols["levels"][slot] = sum(LEVEL_BIT.get(level, 0) for level in vacancy.levels) or ANY_LEVEL
        cols["taking"][slot] = True
        cols["n_required"][slot] = len(vacancy.required)
        self._most_required = max(self._most_required, len(vacancy.required))
        cols["n_preferred"][slot] = len(vacancy.preferred)
        cols["place"][slot] = self.places.id(vacancy.lat, vacancy.lon)
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
            self._vacancies["taking"][slot] = False

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
        cols["place"][start:end] = [self.places.id(s.lat, s.lon) for s in students]
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
            self._vacancies["taking"][slot] = self._vacancies["active"][slot] and not full

    # --- reads --------------------------------------------------------------------------------------------
    def stats(self) -> IndexStats:
        nbytes = (
            self._students.nbytes()
            + self._vacancies.nbytes()
            + self._student_skills.nbytes()
            + self._required.nbytes()
            + self._preferred.nbytes()
            + self.places.nbytes()
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
        n_required = len(vacancy.required)
        need = _least_matched(n_required, min_score)
        if need is None:
            return []
        # Who has too few of the required skills cannot reach min_score, whatever the tiebreak: out first.
        mask = cols["active"][:n] & cols["consent"][:n]
        if need > 0:
            matched = self._student_skills.counts(self.skills.known(vacancy.required), n)
            mask &= matched >= need
        mask &= (cols["seeking"][:n] & KIND_BIT.get(vacancy.kind, 0)) != 0
        if vacancy.levels:
            wanted = sum(LEVEL_BIT.get(level, 0) for level in vacancy.levels)
            mask &= (cols["level"][:n] & wanted) != 0
        slots = np.flatnonzero(mask)
        if len(slots) == 0:
            return []
        proximity: Any = 0.0
        if vacancy.lat is not None and vacancy.lon is not None:
            max_km = cols["max_km"][slots]
            distance = self.places.distances_from(vacancy.lat, vacancy.lon)[cols["place"][slots]]
            reach = ~(distance > max_km)  # an unknown location (NaN) is not out of reach
            slots, distance, max_km = slots[reach], distance[reach], max_km[reach]
            proximity = np.fmax(0.0, 1.0 - distance / max_km)  # fmax: NaN (unknown) -> 0.0
        coverage: Any = 1.0
        if n_required:
            matched_here = (
                matched[slots]
                if need > 0
                else self._student_skills.count_at(self.skills.known(vacancy.required), slots, n)
            )
            coverage = matched_here / n_required
        preferred_fraction: Any = 0.0
        if vacancy.preferred:
            preferred = self.skills.known(vacancy.preferred)
            preferred_fraction = self._student_skills.count_at(preferred, slots, n) / len(vacancy.preferred)
        scores = _scores(coverage, preferred_fraction, proximity, len(slots))
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
        matched = self._required.counts(skills, n)
        # Vacancies whose required skills the student covers too few of cannot reach min_score: out first.
        mask = matched >= self._least_matched_by_slot(min_score, n)
        mask &= cols["taking"][:n]
        mask &= (cols["kind"][:n] & sum(KIND_BIT.get(kind, 0) for kind in student.seeking)) != 0
        mask &= (cols["levels"][:n] & LEVEL_BIT.get(student.level, UNKNOWN_LEVEL)) != 0
        slots = np.flatnonzero(mask)
        if len(slots) == 0:
            return []
        proximity: Any = 0.0
        if student.lat is not None and student.lon is not None:
            distance = self.places.distances_from(student.lat, student.lon)[cols["place"][slots]]
            reach = ~(distance > student.max_distance_km)  # an unknown location (NaN) is not out of reach
            slots, distance = slots[reach], distance[reach]
            proximity = np.fmax(0.0, 1.0 - distance / student.max_distance_km)  # fmax: NaN -> 0.0
        coverage = _fraction(matched[slots], cols["n_required"][slots], 1.0)
        preferred = _fraction(self._preferred.count_at(skills, slots, n), cols["n_preferred"][slots], 0.0)
        scores = _scores(coverage, preferred, proximity, len(slots))
        keep = scores >= min_score
        return _top(self._vacancy_ids, slots[keep], scores[keep], k, skip or set())

    def _least_matched_by_slot(self, min_score: float, n: int) -> npt.NDArray[np.int64]:
        """`_least_matched` of every vacancy slot 0..n-1 (kept: a slot's required skills never change)."""
        known = self._least_matched_slots.get(min_score)
        if known is None or len(known) < n:
            start = 0 if known is None else len(known)
            more = self._least_matched_table(min_score)[self._vacancies["n_required"][start:n]]
            known = more if known is None else np.concatenate([known, more])
            self._least_matched_slots[min_score] = known
        return known[:n]

    def _least_matched_table(self, min_score: float) -> npt.NDArray[np.int64]:
        """`_least_matched` by number of required skills (a count no one reaches where no number can)."""
        table = self._least_matched_tables.get(min_score)
        if table is None or len(table) <= self._most_required:
            unreachable = 1 << 30
            table = np.array(
                [
                    unreachable if (m := _least_matched(r, min_score)) is None else m
                    for r in range(max(MAX_REQUIRED, self._most_required) + 1)
                ],
                dtype=np.int64,
            )
            self._least_matched_tables[min_score] = table
        return table
