"""The in-memory matching index: skills as integer ids in inverted postings (the most common skills kept
per slot instead: a byte row per skill on the students' side, a bit of a word on the vacancies'), everything a
hard filter needs in numpy arrays, filters as vectorised masks, distances once per place (locations are
postcode areas), top-k by partial sort. No per-pair Python loop on the hot path.

What a query does over every slot is elementwise and cheap: kind, level, consent and open-ness are a 64-bit
gate word per slot, kept as a bool mask per bit (Gates), so the query ORs one to three masks; the required
skills are counted (rows summed, bits popcounted, postings added) and compared with the fewest that can reach
the minimum score; a vacancy's site has a kept mask of the students it is in reach of. Gathers, which cost
per element an order more, are for the candidates that pass: reach and proximity from a row per place or zone
(kept, and made ahead by `warm`), the score, and preferred skills for the candidates that can still make the
top k (`_contenders`). Equal scores are ordered by id in numpy (`_Ids`).

At ten thousand students a query is a few dozen numpy calls on small arrays, so what each call costs besides
its work counts too: array methods, not numpy's Python wrappers, on the hot path.

Writes are incremental: a changed student or vacancy takes a new slot and its old slot is switched off (its
gate is 0, and its stale postings are never among the candidates). A rebuild from the database reclaims
stale slots: at every start, and by hand with `techport matching reindex --service URL`; `stale_fraction`
tells how much there is to gain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import compress
from typing import Any

import numpy as np
import numpy.typing as npt

from techport_matching.domain import EPSILON, MAX_REQUIRED, StudentProfile, VacancyProfile
from techport_matching.index.arrays import BYTE_COUNTS, Columns, Floats, Ids, Rows
from techport_matching.index.gates import Gates, student_gate, vacancy_gate
from techport_matching.index.places import Places, Zones, half_proximity
from techport_matching.index.postings import Postings, SkillBits, SkillIds, SkillRows
from techport_matching.index.ranking import (
    combined_scores,
    contenders,
    fractions_by_whole,
    least_matched,
    top,
    triangle,
    weighed_fractions,
)


@dataclass(frozen=True)
class IndexStats:
    students: int
    vacancies: int
    skills: int
    nbytes: int


class MatchingIndex:
    def __init__(self, common_skill_after: int = 64) -> None:
        """`common_skill_after`: how many slots must have a skill before it is kept per slot (a byte row of
        students, a bit of vacancies), while there is room for it."""
        self.skills = SkillIds()
        self.places = Places()
        self.zones = Zones(self.places)
        # zone: place and max_distance_km.
        self._students = Columns({"zone": (np.intp, 0)})
        self._student_gates = Gates()  # student_gate, 0 once the slot is superseded
        self._student_ids = Ids()
        self._student_slot: dict[str, int] = {}
        # What each live entry was built from, so catching up with the database skips what is unchanged.
        self._student_hash: dict[str, int] = {}
        self._vacancy_hash: dict[str, int] = {}
        self._student_skills = SkillRows(common_skill_after)
        self._vacancies = Columns(
            {
                "n_required": (np.intp, 0),
                # Where the slot's coverage and preferred fractions start in the `fractions_by_whole` tables.
                "required_at": (np.intp, 0),
                "preferred_at": (np.intp, 0),
                "place": (np.intp, Places.UNKNOWN),
            }
        )
        self._vacancy_ids = Ids()
        self._vacancy_slot: dict[str, int] = {}
        self._vacancy_gates = Gates()  # vacancy_gate while it takes new students (live and not full), else 0
        self._required = SkillBits(common_skill_after)
        self._preferred = SkillBits(common_skill_after)
        self.profiles: dict[str, VacancyProfile] = {}
        self._reach_by_place = Rows()  # half_proximity to every place, by (lat, lon, max_km) of a student
        # Which student slots are within their max_distance_km of a vacancy's site, by (lat, lon): made ahead
        # for the sites there is room for, so a query from one leaves those out of reach in its first pass.
        self._in_reach = Rows()
        self._least_matched_tables: dict[float, npt.NDArray[np.int64]] = {}
        self._least_matched_slots: dict[float, npt.NDArray[np.integer[Any]]] = {}
        self._most_required = MAX_REQUIRED
        self._most_preferred = 0

    # --- writes ---------------------------------------------------------------------------------------------
    def upsert_student(self, student: StudentProfile) -> None:
        self.load_students([student])

    def remove_student(self, student_id: str) -> None:
        self._student_hash.pop(student_id, None)
        slot = self._student_slot.pop(student_id, None)
        if slot is not None:
            self._student_gates.set(slot, 0)

    def upsert_vacancy(self, vacancy: VacancyProfile) -> None:
        digest = hash(vacancy)
        if self._vacancy_hash.get(vacancy.vacancy_id) == digest:
            return
        self.remove_vacancy(vacancy.vacancy_id)
        if not vacancy.open:
            return
        self._vacancy_hash[vacancy.vacancy_id] = digest
        cols = self._vacancies
        slot = cols.append()
        self._vacancy_gates.set(slot, vacancy_gate(vacancy))
        cols["n_required"][slot] = len(vacancy.required)
        cols["required_at"][slot] = triangle(len(vacancy.required))
        cols["preferred_at"][slot] = triangle(len(vacancy.preferred))
        self._most_required = max(self._most_required, len(vacancy.required))
        self._most_preferred = max(self._most_preferred, len(vacancy.preferred))
        cols["place"][slot] = self.places.id(vacancy.lat, vacancy.lon)
        self._vacancy_ids.extend([vacancy.vacancy_id])
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
            self._vacancy_gates.set(slot, 0)

    def load_students(self, students: list[StudentProfile]) -> None:
        """Add or replace students: in bulk at start-up, reindex and in benchmarks, one at a time from events.
        A student whose profile is unchanged keeps their slot."""
        digests = [hash(s) for s in students]
        # Filtered by a list of flags, not into (student, digest) pairs: a million pairs would cost 64 MB.
        fresh = [self._student_hash.get(s.student_id) != d for s, d in zip(students, digests, strict=True)]
        students, digests = list(compress(students, fresh)), list(compress(digests, fresh))
        # In id order: then slot order is id order (see Ids.ordered).
        by_id = sorted(range(len(students)), key=lambda i: students[i].student_id)
        students, digests = [students[i] for i in by_id], [digests[i] for i in by_id]
        for student in students:
            self.remove_student(student.student_id)
        cols = self._students
        start, n = cols.size, len(students)
        cols.grow_to(start + n)
        end = start + n
        self._student_gates.set_many(start, [student_gate(s) for s in students])
        cols["zone"][start:end] = [
            self.zones.id(self.places.id(s.lat, s.lon), s.max_distance_km) for s in students
        ]
        cols.size = end
        self._student_ids.extend([s.student_id for s in students])
        by_skill: dict[int, list[int]] = {}
        for offset, (student, digest) in enumerate(zip(students, digests, strict=True)):
            slot = start + offset
            self._student_slot[student.student_id] = slot
            self._student_hash[student.student_id] = digest
            for code in student.skills:
                by_skill.setdefault(self.skills.id(code), []).append(slot)
        self._student_skills.room_for(end)  # at once: room made posting by posting could double past `end`
        # The most common first: they are the ones kept per slot, while there is room for them.
        for skill, slots in sorted(by_skill.items(), key=lambda item: -len(item[1])):
            self._student_skills.add_many(skill, np.asarray(slots, dtype=np.intp))

    def stale_fraction(self) -> float:
        """Share of slots that are superseded or removed: the service rebuilds the index when it grows."""
        slots = self._students.size + self._vacancies.size
        live = len(self._student_slot) + len(self._vacancy_slot)
        return 0.0 if slots == 0 else 1.0 - live / slots

    def warm(self) -> None:
        """Distances and reach from every known place, made ahead (while they fit their memory budgets), so
        that a query from a known place starts from them. Called after a build, not per write."""
        self.places.warm()
        self.zones.warm()
        n = self._students.size
        self._in_reach.make_ahead(
            self.places.points(),
            n,  # a bool per student
            lambda point: self._in_reach.get(point, n, functools.partial(self._students_in_reach, *point)),
        )

    def set_full(self, vacancy_id: str, full: bool) -> None:
        """A vacancy with its maximum of matches takes no more from new students."""
        slot = self._vacancy_slot.get(vacancy_id)
        if slot is not None:
            self._vacancy_gates.set(slot, 0 if full else vacancy_gate(self.profiles[vacancy_id]))

    # --- reads ----------------------------------------------------------------------------------------------
    def stats(self) -> IndexStats:
        nbytes = (
            self._students.nbytes()
            + self._vacancies.nbytes()
            + self._student_gates.nbytes()
            + self._vacancy_gates.nbytes()
            + self._student_skills.nbytes()
            + self._required.nbytes()
            + self._preferred.nbytes()
            + self.places.nbytes()
            + self.zones.nbytes()
            + self._reach_by_place.nbytes()
            + self._in_reach.nbytes()
        )
        return IndexStats(len(self._student_slot), len(self._vacancy_slot), len(self.skills), nbytes)

    def match_vacancy(
        self, vacancy: VacancyProfile, min_score: float, k: int, skip: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """The best students for a vacancy: (student_id, score), best first."""
        cols = self._students
        n = cols.size
        n_required = len(vacancy.required)
        need = least_matched(n_required, min_score)
        wanted = vacancy_gate(vacancy)
        if n == 0 or need is None or wanted == 0:
            return []
        # Passes over every slot are cheap elementwise ones; gathers are for the candidates only.
        # Consent, kind and level, and a live slot: the gate masks the vacancy's word names.
        candidate = self._student_gates.passing(wanted, n)
        if need > 0:  # who has too few of the required skills cannot reach min_score, whatever the tiebreak
            matched = self._student_skills.counts(self.skills.known(vacancy.required), n)
            candidate = candidate & (matched >= need)
        in_reach = self._in_reach_of(vacancy, n)
        if in_reach is not None:
            candidate = candidate & in_reach
        slots = candidate.nonzero()[0]
        if len(slots) == 0:
            return []
        coverage: Any = 1.0 - EPSILON  # (1 - EPSILON) * coverage, when nothing is required
        if n_required:
            matched = (
                matched[slots]
                if need > 0
                else self._student_skills.count_at(self.skills.known(vacancy.required), slots, n)
            )
            coverage = weighed_fractions(n_required, 1.0 - EPSILON)[matched]
        half_reach: Any = 0.0
        if vacancy.lat is not None and vacancy.lon is not None:
            half_reach = self.zones.half_proximity(vacancy.lat, vacancy.lon, cols["zone"][slots])
        skip = skip or set()
        half_preferred: Any = 0.0
        if vacancy.preferred:
            slots, coverage, half_reach = contenders(slots, coverage, half_reach, min_score, k + len(skip))
            counted = self._student_skills.count_at(self.skills.known(vacancy.preferred), slots, n)
            half_preferred = weighed_fractions(len(vacancy.preferred), 0.5)[counted]
        scores = combined_scores(coverage, half_preferred, half_reach, len(slots))
        return top(self._student_ids, slots, scores, min_score, k, skip)

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
        wanted = student_gate(student)
        if n == 0 or wanted == 0:
            return []
        # Passes over every slot are cheap elementwise ones; gathers are for the candidates only.
        # Open, not full, kind and level (and the student's consent): the gate masks the student's word names.
        candidate = self._vacancy_gates.passing(wanted, n)
        skills = self.skills.known(student.skills)
        matched = self._required.counts(skills, n)
        # Vacancies whose required skills the student covers too few of cannot reach min_score: out first.
        candidate = candidate & (matched >= self._least_matched_by_slot(min_score, n))
        slots = candidate.nonzero()[0]
        if len(slots) == 0:
            return []
        half_reach: Any = 0.0
        if student.lat is not None and student.lon is not None:
            half_reach = self._half_proximity_to_places(student)[cols["place"][slots]]
        coverages = fractions_by_whole(self._most_required, 1.0 - EPSILON, 1.0)
        coverage = coverages[cols["required_at"][slots] + matched[slots]]
        skip = skip or set()
        slots, coverage, half_reach = contenders(slots, coverage, half_reach, min_score, k + len(skip))
        counted = self._preferred.count_at(skills, slots, n)
        preferred = fractions_by_whole(self._most_preferred, 0.5, 0.0)
        half_preferred = preferred[cols["preferred_at"][slots] + counted]
        scores = combined_scores(coverage, half_preferred, half_reach, len(slots))
        return top(self._vacancy_ids, slots, scores, min_score, k, skip)

    def reach_is_kept(self, vacancy: VacancyProfile) -> bool:
        """Whether the students in reach of the vacancy's site are kept (made ahead by `warm`)."""
        return self._in_reach_of(vacancy, self._students.size) is not None

    def _in_reach_of(self, vacancy: VacancyProfile, n: int) -> npt.NDArray[np.bool_] | None:
        """Which of student slots 0..n-1 have the vacancy's site in reach, if that is kept for its site."""
        lat, lon = vacancy.lat, vacancy.lon
        if lat is None or lon is None:
            return None
        mask = self._in_reach.kept((lat, lon), n)
        if mask is None and (lat, lon) in self._in_reach:  # kept, but made before the newest students came
            mask = self._in_reach.get((lat, lon), n, functools.partial(self._students_in_reach, lat, lon))
        return mask

    def _students_in_reach(self, lat: float, lon: float, start: int, stop: int) -> npt.NDArray[np.bool_]:
        """Whether each of student slots start..stop-1 has (lat, lon) within their max_distance_km (an unknown
        distance is in reach)."""
        return self.zones.half_proximity(lat, lon, self._students["zone"][start:stop]) >= 0

    def _half_proximity_to_places(self, student: StudentProfile) -> Floats:
        """`half_proximity` from the student's location, within their max_distance_km, for every place."""
        lat, lon, max_km = student.lat, student.lon, student.max_distance_km
        assert lat is not None and lon is not None

        def compute(start: int, stop: int) -> Floats:
            return half_proximity(self.places.distances_from(lat, lon)[start:stop], max_km)

        return self._reach_by_place.get((lat, lon, max_km), len(self.places), compute)

    def _least_matched_by_slot(self, min_score: float, n: int) -> npt.NDArray[np.integer[Any]]:
        """`least_matched` of every vacancy slot 0..n-1 (kept: a slot's required skills never change): in
        bytes, as the counts compared with it, while every vacancy's fits (255 where no number can reach)."""
        known = self._least_matched_slots.get(min_score)
        if known is None or len(known) < n:
            start = 0 if known is None else len(known)
            table = self._least_matched_table(min_score)
            if len(table) <= BYTE_COUNTS:
                table = np.minimum(table, 255).astype(np.uint8)
            more = table[self._vacancies["n_required"][start:n]]
            known = more if known is None else np.concatenate([known, more])
            self._least_matched_slots[min_score] = known
        return known[:n]

    def _least_matched_table(self, min_score: float, most: int = 0) -> npt.NDArray[np.int64]:
        """`least_matched` by number of required skills, for every number up to the most any vacancy has (and
        `most`); a count no one reaches where no number can."""
        most = max(most, self._most_required)
        table = self._least_matched_tables.get(min_score)
        if table is None or len(table) <= most:
            unreachable = 1 << 30
            table = np.array(
                [unreachable if (m := least_matched(r, min_score)) is None else m for r in range(most + 1)],
                dtype=np.int64,
            )
            self._least_matched_tables[min_score] = table
        return table


__all__ = [
    "Gates",
    "IndexStats",
    "MatchingIndex",
    "Postings",
    "SkillBits",
    "SkillRows",
    "contenders",
    "scores",
    "top",
]
