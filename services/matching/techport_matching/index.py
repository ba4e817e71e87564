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
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import combinations, compress
from typing import Any

import numpy as np
import numpy.typing as npt
from techport_shared.geo import EARTH_RADIUS_KM

from techport_matching.domain import EPSILON, KINDS, LEVELS, MAX_REQUIRED, StudentProfile, VacancyProfile

LEVEL_BIT = {level: 1 << i for i, level in enumerate(LEVELS)}
UNKNOWN_LEVEL = 1 << 15  # a student's level we do not know: only a vacancy open to any level takes them
ANY_LEVEL = 0xFFFF
KIND_SHIFT = {kind: 16 * i for i, kind in enumerate(KINDS)}
_FLOAT = np.float64
BYTE_COUNTS = 254  # counts of up to this many skills are kept in bytes, below the byte's 255 ("unreachable")
Floats = npt.NDArray[np.float64]


@functools.lru_cache(maxsize=1024)
def gate(kinds: frozenset[str], levels: int) -> int:
    """The 64-bit word the hard filters on kind and level reduce to: 16 level bits for each kind. A student
    sets their level's bit under each kind they seek, a vacancy the bits of the levels it takes under its
    kind; the pair passes when the two words share a bit."""
    return sum(levels << KIND_SHIFT[kind] for kind in kinds if kind in KIND_SHIFT)


@functools.lru_cache(maxsize=1024)
def _level_bits(levels: frozenset[str]) -> int:
    return sum(LEVEL_BIT.get(level, 0) for level in levels) if levels else ANY_LEVEL


def student_gate(student: StudentProfile) -> int:
    if not student.consent_matching:
        return 0
    return gate(student.seeking, LEVEL_BIT.get(student.level, UNKNOWN_LEVEL))


def vacancy_gate(vacancy: VacancyProfile) -> int:
    if not vacancy.open:
        return 0
    word = _VACANCY_WORDS.get((vacancy.kind, vacancy.levels))
    return _vacancy_word(vacancy.kind, vacancy.levels) if word is None else word


def _vacancy_word(kind: str, levels: frozenset[str]) -> int:
    return gate(frozenset((kind,)), _level_bits(levels))


def _grown(array: npt.NDArray[Any], capacity: int) -> npt.NDArray[Any]:
    """`array` in a larger one, zeros after it."""
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


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
        ids = self._ids
        return [i for code in codes if (i := ids.get(code)) is not None]

    def __len__(self) -> int:
        return len(self._ids)


class Postings(ABC):
    """Which slots have which skill. A skill that `common_after` slots have becomes common (while there is
    room for `most_common`) and is then kept per slot by the subclass: a bit of a word per slot, or a byte row
    per skill. The others are a growable array of slots per skill (a posting, in slot order, as slots only
    grow). Counting a common skill is elementwise, not a search or scatter of a posting nearly as long as the
    index."""

    def __init__(self, common_after: int, most_common: int) -> None:
        self._arrays: list[npt.NDArray[np.intp]] = []  # intp: what fancy indexing takes without a cast
        self._sizes: list[int] = []
        self._common_after = common_after
        self._most_common = most_common
        self._common: dict[int, int] = {}  # skill id -> its bit or row

    @abstractmethod
    def room_for(self, slots: int) -> None:
        """Room for slots 0..slots-1 in the common skills (a slot without any has zeros)."""

    @abstractmethod
    def _make_common(self, common: int) -> None:
        """Room for the `common`-th common skill (numbered from 0)."""

    @abstractmethod
    def _mark(self, common: int, slots: npt.NDArray[np.intp]) -> None:
        """Record that `slots` have the `common`-th common skill."""

    @abstractmethod
    def _common_counts(self, commons: list[int], n: int) -> tuple[npt.NDArray[np.uint8], bool]:
        """How many of `commons` (at least one) each slot 0..n-1 has, and whether the array is the caller's
        to change (not a view of the index)."""

    @abstractmethod
    def _common_count_at(self, commons: list[int], slots: npt.NDArray[np.intp]) -> npt.NDArray[np.uint8]:
        """How many of `commons` (at least one) each of `slots` has."""

    def add(self, skill: int, slot: int) -> None:
        self.add_many(skill, np.array([slot], dtype=np.intp))

    def add_many(self, skill: int, slots: npt.NDArray[np.intp]) -> None:
        """Record that `slots` (ascending, above every slot recorded so far) have `skill`."""
        if len(slots) == 0:
            return
        self.room_for(int(slots[-1]) + 1)
        common = self._common.get(skill)
        if common is not None:
            self._mark(common, slots)
            return
        while skill >= len(self._arrays):
            self._arrays.append(np.empty(4, dtype=np.intp))
            self._sizes.append(0)
        size = self._sizes[skill]
        needed = size + len(slots)
        if needed > len(self._arrays[skill]):
            self._arrays[skill] = np.resize(self._arrays[skill], max(needed, 2 * len(self._arrays[skill])))
        self._arrays[skill][size:needed] = slots
        self._sizes[skill] = needed
        if needed >= self._common_after and len(self._common) < self._most_common:
            common = self._common[skill] = len(self._common)
            self._make_common(common)
            self._mark(common, self._arrays[skill][:needed])
            self._arrays[skill], self._sizes[skill] = np.empty(0, dtype=np.intp), 0  # kept per slot now

    def _split(self, skills: list[int]) -> tuple[list[int], list[npt.NDArray[np.intp]]]:
        """The common ones among `skills`, and the postings of the others."""
        commons, rare = [], []
        for skill in skills:
            common = self._common.get(skill)
            if common is not None:
                commons.append(common)
            elif skill < len(self._arrays) and self._sizes[skill]:
                rare.append(self._arrays[skill][: self._sizes[skill]])
        return commons, rare

    def counts(self, skills: list[int], n: int) -> npt.NDArray[np.integer[Any]]:
        """How many of `skills` each slot 0..n-1 has: in bytes when they fit (sums and comparisons of bytes
        take a third of the time of 64-bit ones)."""
        commons, rare = self._split(skills)
        common = self._common_counts(commons, n) if commons else None
        if not rare:
            return np.zeros(n, dtype=np.uint8) if common is None else common[0]
        if len(rare) <= 2 and len(skills) <= BYTE_COUNTS:
            # A posting or two: each adds one in place at its slots (a skill is in a posting once per slot).
            found = np.zeros(n, dtype=np.uint8) if common is None else common[0]
            if common is not None and not common[1]:
                found = found.copy()
            for postings in rare:
                found[postings] += np.uint8(1)
            return found
        # More: one count of all of them together.
        counted: npt.NDArray[np.integer[Any]] = np.bincount(np.concatenate(rare), minlength=n)[:n]
        if len(skills) <= BYTE_COUNTS:
            counted = counted.astype(np.uint8)
        return counted if common is None else counted + common[0]

    def count_at(
        self, skills: list[int], slots: npt.NDArray[np.intp], n: int
    ) -> npt.NDArray[np.integer[Any]]:
        """How many of `skills` each of `slots` (ascending, all below n) has."""
        commons, rare = self._split(skills)
        found: npt.NDArray[np.integer[Any]] = (
            self._common_count_at(commons, slots) if commons else np.zeros(len(slots), dtype=np.uint8)
        )
        if not rare or len(slots) == 0:
            return found
        held = sum(len(postings) for postings in rare)
        # Costs measured roughly, in ns: a binary search of the slots in each posting, or a count of all.
        if len(rare) * (3500 + 100 * len(slots)) < 2000 + n // 4 + 2 * held:
            for postings in rare:
                at = np.minimum(postings.searchsorted(slots), len(postings) - 1)
                found = found + (postings[at] == slots)
            return found
        return found + np.bincount(np.concatenate(rare), minlength=n)[slots]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)


class SkillBits(Postings):
    """Common skills as bits of one uint64 per slot: counting many of them (a student's skills against
    vacancies) is a gather or a pass, an AND and a popcount, whatever their number."""

    def __init__(self, common_after: int, most_common: int = 64) -> None:
        super().__init__(common_after, min(most_common, 64))
        self._bits: npt.NDArray[np.uint64] = np.zeros(1024, dtype=np.uint64)

    def room_for(self, slots: int) -> None:
        if slots > len(self._bits):
            self._bits = _grown(self._bits, max(slots, 2 * len(self._bits)))

    def _make_common(self, common: int) -> None:
        pass  # its bit is in every slot's word already

    def _mark(self, common: int, slots: npt.NDArray[np.intp]) -> None:
        self._bits[slots] |= np.uint64(1 << common)

    @staticmethod
    def _mask(commons: list[int]) -> np.uint64:
        return np.uint64(sum(1 << common for common in commons))

    def _common_counts(self, commons: list[int], n: int) -> tuple[npt.NDArray[np.uint8], bool]:
        self.room_for(n)
        return np.bitwise_count(self._bits[:n] & self._mask(commons)), True

    def _common_count_at(self, commons: list[int], slots: npt.NDArray[np.intp]) -> npt.NDArray[np.uint8]:
        return np.bitwise_count(self._bits[slots] & self._mask(commons))

    def nbytes(self) -> int:
        return super().nbytes() + self._bits.nbytes


class SkillRows(Postings):
    """Common skills as a byte row each (1 where the slot has it): counting a few of them (a vacancy's
    required skills against students) is a sum of that many rows, a third of the time of a popcount of 64-bit
    words."""

    def __init__(self, common_after: int, most_common: int = 128) -> None:
        super().__init__(common_after, most_common)
        self._rows: list[npt.NDArray[np.uint8]] = []
        self._capacity = 1024

    def room_for(self, slots: int) -> None:
        if slots > self._capacity:
            self._capacity = max(slots, 2 * self._capacity)
            self._rows = [_grown(row, self._capacity) for row in self._rows]

    def _make_common(self, common: int) -> None:
        self._rows.append(np.zeros(self._capacity, dtype=np.uint8))

    def _mark(self, common: int, slots: npt.NDArray[np.intp]) -> None:
        self._rows[common][slots] = 1

    def _common_counts(self, commons: list[int], n: int) -> tuple[npt.NDArray[np.uint8], bool]:
        self.room_for(n)
        rows = self._rows
        if len(commons) == 1:
            return rows[commons[0]][:n], False
        found = rows[commons[0]][:n] + rows[commons[1]][:n]
        for common in commons[2:]:
            found += rows[common][:n]
        return found, True

    def _common_count_at(self, commons: list[int], slots: npt.NDArray[np.intp]) -> npt.NDArray[np.uint8]:
        rows = self._rows
        found = rows[commons[0]][slots]
        for common in commons[1:]:
            found += rows[common][slots]
        return found

    def nbytes(self) -> int:
        return super().nbytes() + sum(row.nbytes for row in self._rows)


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

    def append(self) -> int:
        """A new slot at the end: its index."""
        slot = self.size
        self.grow_to(slot + 1)
        self.size += 1
        return slot

    def nbytes(self) -> int:
        return sum(array.nbytes for array in self._arrays.values())


class _Ids:
    """The id of each slot, in an array of fixed-width strings (as wide as the longest id): the top k orders
    equal scores by it in numpy, and makes the strings it returns from it, not from objects all over the heap.
    Ids hold no NUL (the array pads with it).

    `ordered` slots from the first are in id order (a build adds its records sorted by id): among them, slot
    order is id order, and equal scores need no comparison of strings."""

    def __init__(self) -> None:
        self.size = 0
        self.ordered = 0
        self.keys: npt.NDArray[np.str_] = np.zeros(1024, dtype="U8")

    def extend(self, names: list[str]) -> None:
        start, stop = self.size, self.size + len(names)
        added = np.array(names, dtype=np.str_)
        width = max(self.keys.itemsize, added.itemsize) // 4  # UCS-4
        if stop > len(self.keys) or width * 4 > self.keys.itemsize:
            keys = np.zeros(max(stop, 2 * len(self.keys)), dtype=f"U{width}")
            keys[:start] = self.keys[:start]
            self.keys = keys
        self.keys[start:stop] = added
        self.size = stop
        run = self.keys[max(start - 1, 0) : stop]  # the last id before these, if any, and these
        if self.ordered == start and bool(np.all(run[:-1] < run[1:])):
            self.ordered = stop

    def nbytes(self) -> int:
        return self.keys.nbytes


class _Rows:
    """Arrays over ids that only grow (places, zones, student slots), one per key, for the most recently used
    keys within a memory budget: a row made before new ids appeared is extended by just the new ones."""

    def __init__(self, budget_bytes: int = 16 << 20) -> None:
        self._rows: OrderedDict[Any, npt.NDArray[Any]] = OrderedDict()
        self._budget = budget_bytes
        self._bytes = 0

    def __contains__(self, key: Any) -> bool:
        return key in self._rows

    def has_room(self, nbytes: int) -> bool:
        return self._bytes + nbytes <= self._budget

    def make_ahead(self, keys: Iterable[Any], nbytes: int, make: Callable[[Any], object]) -> None:
        """`make(key)` for each of `keys` in turn, while a row of `nbytes` still fits the budget."""
        for key in keys:
            if not self.has_room(nbytes):
                return
            make(key)

    def kept(self, key: Any, size: int) -> npt.NDArray[Any] | None:
        """The row for `key` if it is kept and covers ids 0..size-1."""
        row = self._rows.get(key)
        if row is not None and len(row) >= size:
            self._rows.move_to_end(key)  # the most recently used last
            return row
        return None

    def get(self, key: Any, size: int, compute: Callable[[int, int], npt.NDArray[Any]]) -> npt.NDArray[Any]:
        row = self.kept(key, size)
        if row is not None:
            return row
        row = self._rows.pop(key, None)
        if row is not None:
            self._bytes -= row.nbytes
        if row is None or len(row) < size:
            start = 0 if row is None else len(row)
            more = compute(start, size)
            row = more if row is None else np.concatenate([row, more])
        while self._rows and self._bytes + row.nbytes > self._budget:
            self._bytes -= self._rows.popitem(last=False)[1].nbytes  # the least recently used first
        self._rows[key] = row
        self._bytes += row.nbytes
        return row

    def nbytes(self) -> int:
        return self._bytes


def _key_bits(key: int) -> int:
    """The bits of a Gates mask: one level bit of one kind, or (~kind) every level bit of a kind."""
    return ANY_LEVEL << (16 * ~key) if key < 0 else 1 << key


def _levels_by_kind(word: int) -> list[tuple[int, int]]:
    """(kind, its 16 level bits) for each kind with any bit set in `word`."""
    fields = ((kind, (word >> (16 * kind)) & ANY_LEVEL) for kind in range(len(KINDS)))
    return [(kind, levels) for kind, levels in fields if levels]


def _level_keys(kind: int, levels: int) -> list[int]:
    return [16 * kind + bit for bit in range(16) if levels >> bit & 1]


def _keys(word: int) -> list[int]:
    """The Gates masks a slot with `word` is in: its kinds' any-level masks and every bit's."""
    return [key for kind, levels in _levels_by_kind(word) for key in [~kind, *_level_keys(kind, levels)]]


@functools.lru_cache(maxsize=4096)
def _query_keys(word: int) -> tuple[int, ...]:
    """The Gates masks whose union is the slots sharing a bit with `word`: per kind, its any-level mask when
    the word takes any level, else a mask per level bit."""
    return tuple(
        key
        for kind, levels in _levels_by_kind(word)
        for key in ([~kind] if levels == ANY_LEVEL else _level_keys(kind, levels))
    )


# The word of every kind and set of levels a vacancy can have (2,048), and the masks each names, made once: a
# query looks them up instead of working them out.
_VACANCY_WORDS = {
    (kind, frozenset(levels)): _vacancy_word(kind, frozenset(levels))
    for kind in KINDS
    for size in range(len(LEVELS) + 1)
    for levels in combinations(LEVELS, size)
}
for _word in _VACANCY_WORDS.values():
    _query_keys(_word)


class Gates:
    """The gate word of every slot, kept also as one bool mask per bit in use and one per kind (any of its 16
    level bits), updated as slots change: a query ORs the one to three masks its word names instead of testing
    every slot's word."""

    def __init__(self) -> None:
        self._words: npt.NDArray[np.uint64] = np.zeros(1024, dtype=np.uint64)
        self._masks: dict[int, npt.NDArray[np.bool_]] = {}  # by _keys

    def _mask(self, key: int) -> npt.NDArray[np.bool_]:
        mask = self._masks.get(key)
        if mask is None:
            mask = self._masks[key] = np.zeros(len(self._words), dtype=np.bool_)
        return mask

    def _room_for(self, slots: int) -> None:
        if slots > len(self._words):
            capacity = max(slots, 2 * len(self._words))
            self._words = _grown(self._words, capacity)
            for key, mask in self._masks.items():
                self._masks[key] = _grown(mask, capacity)

    def set(self, slot: int, value: int) -> None:
        self._room_for(slot + 1)
        for key in _keys(int(self._words[slot]) | value):
            self._mask(key)[slot] = (value & _key_bits(key)) != 0
        self._words[slot] = value

    def set_many(self, start: int, values: list[int]) -> None:
        """Set the words of new slots start, start + 1, ... (all 0 so far)."""
        stop = start + len(values)
        self._room_for(stop)
        words = self._words[start:stop] = np.asarray(values, dtype=np.uint64)
        for key in _keys(int(np.bitwise_or.reduce(words)) if len(words) else 0):
            self._mask(key)[start:stop] = (words & np.uint64(_key_bits(key))) != 0

    def passing(self, word: int, n: int) -> npt.NDArray[np.bool_]:
        """Which of slots 0..n-1 share a bit with `word` (read only: it may be a kept mask)."""
        masks = [self._masks[key][:n] for key in _query_keys(word) if key in self._masks]
        if not masks:
            return np.zeros(n, dtype=np.bool_)
        return masks[0] if len(masks) == 1 else functools.reduce(np.bitwise_or, masks)

    def nbytes(self) -> int:
        return self._words.nbytes + sum(mask.nbytes for mask in self._masks.values())


class Places:
    """The distinct locations of students and vacancies, and the distances from a point to each of them.

    Locations come from postcode areas: a few thousand places for any number of people. So a query computes
    the great-circle distance once per place (and keeps it for the points asked about most recently, such as
    an employer's site), then looks each person's distance up, instead of once per person.
    """

    UNKNOWN = 0  # the place of whoever has no location: its distance is NaN, which every filter lets pass

    def __init__(self) -> None:
        self._ids: dict[tuple[float, float], int] = {}
        # Longitude in degrees, latitude in radians and its cosine: what every distance from a place needs.
        self._columns = _Columns(
            {"lon": (_FLOAT, np.nan), "phi": (_FLOAT, np.nan), "cos_phi": (_FLOAT, np.nan)}, capacity=256
        )
        self._columns.size = 1  # place 0 is UNKNOWN
        self._rows = _Rows()

    def __len__(self) -> int:
        return self._columns.size

    def id(self, lat: float | None, lon: float | None) -> int:
        if lat is None or lon is None:
            return self.UNKNOWN
        found = self._ids.get((lat, lon))
        if found is None:
            found = self._ids[(lat, lon)] = self._columns.append()
            phi = np.radians(lat)
            self._columns["lon"][found], self._columns["phi"][found] = lon, phi
            self._columns["cos_phi"][found] = np.cos(phi)
        return found

    def points(self) -> list[tuple[float, float]]:
        return list(self._ids)

    def warm(self) -> None:
        """Distances from every place to every place, made ahead while they fit the rows' memory budget."""
        self._rows.make_ahead(self.points(), 8 * len(self), lambda point: self.distances_from(*point))

    def distances_from(self, lat: float, lon: float) -> Floats:
        """Great-circle distance in km from (lat, lon) to every place, by place id."""
        return self._rows.get(
            (lat, lon), len(self), lambda start, stop: self._distances(start, stop, lat, lon)
        )

    def _distances(self, start: int, stop: int, lat: float, lon: float) -> Floats:
        """Great-circle distances from (lat, lon) to places start..stop-1: `haversine_km`'s formula, operation
        for operation (so the same to the last bit), each place's own terms computed when it was added."""
        places = slice(start, stop)
        phi = np.radians(lat)
        s_phi = np.sin((phi - self._columns["phi"][places]) / 2)
        s_lambda = np.sin(np.radians(lon - self._columns["lon"][places]) / 2)
        a = s_phi * s_phi + self._columns["cos_phi"][places] * np.cos(phi) * (s_lambda * s_lambda)
        result: Floats = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))
        return result

    def nbytes(self) -> int:
        return self._columns.nbytes() + self._rows.nbytes()


def half_proximity(distance: Floats, max_km: Any) -> Floats:
    """Half the score's proximity (domain.assess, operation for operation), and -inf where the distance is
    beyond max_km: the score is then -inf, below any minimum. An unknown distance (NaN) is in reach, at 0."""
    half: Floats = 0.5 * np.fmax(0.0, 1.0 - distance / max_km)
    half[distance > max_km] = -np.inf
    return half


class Zones:
    """The distinct (place, max_distance_km) pairs of students: reach and proximity from a vacancy's site are
    computed once per zone (and kept for the sites asked about most recently), not once per student."""

    def __init__(self, places: Places) -> None:
        self._places = places
        self._ids: dict[tuple[int, float], int] = {}
        self._columns = _Columns(
            {"place": (np.intp, Places.UNKNOWN), "max_km": (_FLOAT, np.nan)}, capacity=256
        )
        self._rows = _Rows()

    def id(self, place: int, max_km: float) -> int:
        found = self._ids.get((place, max_km))
        if found is None:
            found = self._ids[(place, max_km)] = self._columns.append()
            self._columns["place"][found], self._columns["max_km"][found] = place, max_km
        return found

    def half_proximity(self, lat: float, lon: float, zones: npt.NDArray[np.intp]) -> Floats:
        """`half_proximity` from (lat, lon) for `zones`: through a row over every zone, kept for the site,
        unless the site has none yet and the zones asked for are far fewer than all."""
        size = self._columns.size
        row = self._rows.kept((lat, lon), size)
        if row is None:
            if (lat, lon) not in self._rows and 4 * len(zones) < size:
                return self._half_proximity(lat, lon, zones)
            row = self._row(lat, lon)
        return row[zones]

    def _row(self, lat: float, lon: float) -> Floats:
        return self._rows.get(
            (lat, lon),
            self._columns.size,
            lambda start, stop: self._half_proximity(lat, lon, slice(start, stop)),
        )

    def warm(self) -> None:
        """A row from every place, made ahead while they fit the rows' memory budget."""
        self._rows.make_ahead(self._places.points(), 8 * self._columns.size, lambda point: self._row(*point))

    def _half_proximity(self, lat: float, lon: float, zones: Any) -> Floats:
        distance = self._places.distances_from(lat, lon)[self._columns["place"][zones]]
        return half_proximity(distance, self._columns["max_km"][zones])

    def nbytes(self) -> int:
        return self._columns.nbytes() + self._rows.nbytes()


def _nth_best(values: Floats, nth: int) -> float:
    """The nth largest of `values` (1 <= nth <= len): a partial sort of a copy by the array's own method,
    which is np.partition less its Python wrapper (that costs as much as the sort on a few hundred values)."""
    part = values.copy()
    part.partition(len(part) - nth)
    return float(part[len(part) - nth])


def _top(
    ids: _Ids, slots: npt.NDArray[np.intp], scores: Floats, min_score: float, k: int, skip: set[str]
) -> list[tuple[str, float]]:
    """At min_score or above, best first, ties by id, without `skip`: a partial sort for the bar the best
    k + len(skip) reach, then an exact order of the few that reach it, all in numpy up to the k returned."""
    want = k + len(skip)
    if len(slots) == 0 or k <= 0:
        return []
    bar = min_score
    if want < len(slots):
        # Those out of reach are -inf, below any bar: no need to leave them out first. Ties at the bar stay
        # in, so the id order decides among them as the reference does.
        bar = max(bar, _nth_best(scores, want))
    chosen = (scores >= bar).nonzero()[0]
    if len(chosen) == 0:
        return []
    chosen_scores = scores[chosen]
    chosen_slots = slots[chosen]
    if chosen_slots[-1] < ids.ordered:  # slot order is id order: a stable sort by score puts ties in id order
        order = (-chosen_scores).argsort(kind="stable")[:want]
    else:
        order = np.lexsort((ids.keys[chosen_slots], -chosen_scores))[:want]
    ranked = zip(ids.keys[chosen_slots[order]].tolist(), chosen_scores[order].tolist(), strict=True)
    if skip:
        return [pair for pair in ranked if pair[0] not in skip][:k]
    return list(ranked)[:k]


def _scores(coverage: Any, half_preferred: Any, half_proximity: Any, count: int) -> Floats:
    """domain.score over arrays (or scalars where every candidate has the same value), in its order of
    operations, so the scores are the reference's to the last bit. `coverage` is already weighed by
    (1 - EPSILON), the other two are halved."""
    # A part that is 0 for everyone is not added: x + 0.0 is x to the bit (or +0.0 for -0.0, the same score).
    if not isinstance(half_preferred, np.ndarray) and half_preferred == 0.0:
        tiebreak = half_proximity
    elif not isinstance(half_proximity, np.ndarray) and half_proximity == 0.0:
        tiebreak = half_preferred
    else:
        tiebreak = half_preferred + half_proximity
    scores = coverage + EPSILON * tiebreak
    return scores if isinstance(scores, np.ndarray) else np.full(count, scores)


def _contenders(
    slots: npt.NDArray[np.intp], coverage: Any, half_reach: Any, min_score: float, want: int
) -> tuple[npt.NDArray[np.intp], Any, Any]:
    """The candidates that can still be among the best `want` at min_score or above, whatever their preferred
    skills: so only they need those counted. A score lies between its values with none and with all of the
    preferred skills (rounding is monotonic), so whose highest is below the `want`-th best lowest is out."""
    if len(slots) <= 32 * want:
        return slots, coverage, half_reach  # too few to gain from a cut
    lowest = _scores(coverage, 0.0, half_reach, len(slots))
    # The want-th best of a sample is no better than that of all: a bar that lets through all who can make it,
    # and a partial sort of a sample costs little.
    sample = lowest[:: max(1, len(lowest) // (16 * want))]
    bar = max(min_score, _nth_best(sample, want))
    # The highest is at most EPSILON * 0.5 above the lowest, give or take roundings far below the margin's
    # 1e-12: who is below the bar by more cannot reach it (no second pass for the highest).
    keep = (lowest >= bar - (0.5 * EPSILON + 1e-12)).nonzero()[0]
    return slots[keep], _at(coverage, keep), _at(half_reach, keep)


def _at(part: Any, keep: npt.NDArray[np.intp]) -> Any:
    """`part` at `keep`, or the scalar every candidate shares."""
    return part[keep] if isinstance(part, np.ndarray) else part


@functools.lru_cache(maxsize=1024)
def _weighed_fractions(whole: int, weight: float) -> Floats:
    """weight * (part / whole) for every part 0..whole, as the score computes it."""
    table: Floats = weight * (np.arange(whole + 1) / whole)
    table.flags.writeable = False
    return table


def _triangle(whole: int) -> int:
    """Where the fractions of `whole` start in a `_fractions_by_whole` table."""
    return whole * (whole + 1) // 2


@functools.lru_cache(maxsize=64)
def _fractions_by_whole(most: int, weight: float, if_none: float) -> Floats:
    """weight * (part / whole) at _triangle(whole) + part, for every whole 0..most and part 0..whole (weight *
    if_none for a whole of 0): each slot's fraction is one gather, at the slot's own start plus its count."""
    wholes = (_weighed_fractions(whole, weight) for whole in range(1, most + 1))
    table: Floats = np.concatenate([np.array([weight * if_none]), *wholes])
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=1024)
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
    def __init__(self, common_skill_after: int = 64) -> None:
        """`common_skill_after`: how many slots must have a skill before it is kept per slot (a byte row of
        students, a bit of vacancies), while there is room for it."""
        self.skills = SkillIds()
        self.places = Places()
        self.zones = Zones(self.places)
        # zone: place and max_distance_km.
        self._students = _Columns({"zone": (np.intp, 0)})
        self._student_gates = Gates()  # student_gate, 0 once the slot is superseded
        self._student_ids = _Ids()
        self._student_slot: dict[str, int] = {}
        # What each live entry was built from, so catching up with the database skips what is unchanged.
        self._student_hash: dict[str, int] = {}
        self._vacancy_hash: dict[str, int] = {}
        self._student_skills = SkillRows(common_skill_after)
        self._vacancies = _Columns(
            {
                "n_required": (np.intp, 0),
                # Where the slot's coverage and preferred fractions start in the `_fractions_by_whole` tables.
                "required_at": (np.intp, 0),
                "preferred_at": (np.intp, 0),
                "place": (np.intp, Places.UNKNOWN),
            }
        )
        self._vacancy_ids = _Ids()
        self._vacancy_slot: dict[str, int] = {}
        self._vacancy_gates = Gates()  # vacancy_gate while it takes new students (live and not full), else 0
        self._required = SkillBits(common_skill_after)
        self._preferred = SkillBits(common_skill_after)
        self.profiles: dict[str, VacancyProfile] = {}
        self._reach_by_place = _Rows()  # half_proximity to every place, by (lat, lon, max_km) of a student
        # Which student slots are within their max_distance_km of a vacancy's site, by (lat, lon): made ahead
        # for the sites there is room for, so a query from one leaves those out of reach in its first pass.
        self._in_reach = _Rows()
        self._least_matched_tables: dict[float, npt.NDArray[np.int64]] = {}
        self._least_matched_slots: dict[float, npt.NDArray[np.integer[Any]]] = {}
        self._most_required = MAX_REQUIRED
        self._most_preferred = 0

    # --- writes -------------------------------------------------------------------------------------------
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
        cols["required_at"][slot] = _triangle(len(vacancy.required))
        cols["preferred_at"][slot] = _triangle(len(vacancy.preferred))
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
        # In id order: then slot order is id order (see _Ids.ordered).
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

    # --- reads --------------------------------------------------------------------------------------------
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
        need = _least_matched(n_required, min_score)
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
            coverage = _weighed_fractions(n_required, 1.0 - EPSILON)[matched]
        half_reach: Any = 0.0
        if vacancy.lat is not None and vacancy.lon is not None:
            half_reach = self.zones.half_proximity(vacancy.lat, vacancy.lon, cols["zone"][slots])
        skip = skip or set()
        half_preferred: Any = 0.0
        if vacancy.preferred:
            slots, coverage, half_reach = _contenders(slots, coverage, half_reach, min_score, k + len(skip))
            counted = self._student_skills.count_at(self.skills.known(vacancy.preferred), slots, n)
            half_preferred = _weighed_fractions(len(vacancy.preferred), 0.5)[counted]
        scores = _scores(coverage, half_preferred, half_reach, len(slots))
        return _top(self._student_ids, slots, scores, min_score, k, skip)

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
        coverages = _fractions_by_whole(self._most_required, 1.0 - EPSILON, 1.0)
        coverage = coverages[cols["required_at"][slots] + matched[slots]]
        skip = skip or set()
        slots, coverage, half_reach = _contenders(slots, coverage, half_reach, min_score, k + len(skip))
        counted = self._preferred.count_at(skills, slots, n)
        preferred = _fractions_by_whole(self._most_preferred, 0.5, 0.0)
        half_preferred = preferred[cols["preferred_at"][slots] + counted]
        scores = _scores(coverage, half_preferred, half_reach, len(slots))
        return _top(self._vacancy_ids, slots, scores, min_score, k, skip)

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
        """`_least_matched` of every vacancy slot 0..n-1 (kept: a slot's required skills never change): in
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
        """`_least_matched` by number of required skills, for every number up to the most any vacancy has (and
        `most`); a count no one reaches where no number can."""
        most = max(most, self._most_required)
        table = self._least_matched_tables.get(min_score)
        if table is None or len(table) <= most:
            unreachable = 1 << 30
            table = np.array(
                [unreachable if (m := _least_matched(r, min_score)) is None else m for r in range(most + 1)],
                dtype=np.int64,
            )
            self._least_matched_tables[min_score] = table
        return table
