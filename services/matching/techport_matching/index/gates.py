"""Kind, level, consent and open-ness as one gate word per slot, kept as a bool mask per bit: a query ORs the
one to three masks its own word names."""

from __future__ import annotations

import functools
from itertools import combinations

import numpy as np
import numpy.typing as npt
from techport_shared.events import KINDS, LEVELS

from techport_matching.domain import StudentProfile, VacancyProfile
from techport_matching.index.arrays import grown

LEVEL_BIT = {level: 1 << i for i, level in enumerate(LEVELS)}
UNKNOWN_LEVEL = 1 << 15  # a student's level we do not know: only a vacancy open to any level takes them
ANY_LEVEL = 0xFFFF
KIND_SHIFT = {kind: 16 * i for i, kind in enumerate(KINDS)}


@functools.lru_cache(maxsize=1024)
def gate(kinds: frozenset[str], levels: int) -> int:
    """The 64-bit word the hard filters on kind and level reduce to: 16 level bits for each kind. A student
    sets their level's bit under each kind they seek, a vacancy the bits of the levels it takes under its
    kind; the pair passes when the two words share a bit."""
    return sum(levels << KIND_SHIFT[kind] for kind in kinds if kind in KIND_SHIFT)


@functools.lru_cache(maxsize=1024)
def level_bits(levels: frozenset[str]) -> int:
    return sum(LEVEL_BIT.get(level, 0) for level in levels) if levels else ANY_LEVEL


def student_gate(student: StudentProfile) -> int:
    if not student.consent_matching:
        return 0
    return gate(student.seeking, LEVEL_BIT.get(student.level, UNKNOWN_LEVEL))


def vacancy_gate(vacancy: VacancyProfile) -> int:
    if not vacancy.open:
        return 0
    word = VACANCY_WORDS.get((vacancy.kind, vacancy.levels))
    return vacancy_word(vacancy.kind, vacancy.levels) if word is None else word


def vacancy_word(kind: str, levels: frozenset[str]) -> int:
    return gate(frozenset((kind,)), level_bits(levels))


def key_bits(key: int) -> int:
    """The bits of a Gates mask: one level bit of one kind, or (~kind) every level bit of a kind."""
    return ANY_LEVEL << (16 * ~key) if key < 0 else 1 << key


def levels_by_kind(word: int) -> list[tuple[int, int]]:
    """(kind, its 16 level bits) for each kind with any bit set in `word`."""
    fields = ((kind, (word >> (16 * kind)) & ANY_LEVEL) for kind in range(len(KINDS)))
    return [(kind, levels) for kind, levels in fields if levels]


def level_keys(kind: int, levels: int) -> list[int]:
    return [16 * kind + bit for bit in range(16) if levels >> bit & 1]


def keys(word: int) -> list[int]:
    """The Gates masks a slot with `word` is in: its kinds' any-level masks and every bit's."""
    return [key for kind, levels in levels_by_kind(word) for key in [~kind, *level_keys(kind, levels)]]


@functools.lru_cache(maxsize=4096)
def query_keys(word: int) -> tuple[int, ...]:
    """The Gates masks whose union is the slots sharing a bit with `word`: per kind, its any-level mask when
    the word takes any level, else a mask per level bit."""
    return tuple(
        key
        for kind, levels in levels_by_kind(word)
        for key in ([~kind] if levels == ANY_LEVEL else level_keys(kind, levels))
    )


# The word of every kind and set of levels a vacancy can have (2,048), and the masks each names, made once: a
# query looks them up instead of working them out.
VACANCY_WORDS = {
    (kind, frozenset(levels)): vacancy_word(kind, frozenset(levels))
    for kind in KINDS
    for size in range(len(LEVELS) + 1)
    for levels in combinations(LEVELS, size)
}
for _word in VACANCY_WORDS.values():
    query_keys(_word)


class Gates:
    """The gate word of every slot, kept also as one bool mask per bit in use and one per kind (any of its 16
    level bits), updated as slots change: a query ORs the one to three masks its word names instead of testing
    every slot's word."""

    def __init__(self) -> None:
        self._words: npt.NDArray[np.uint64] = np.zeros(1024, dtype=np.uint64)
        self._masks: dict[int, npt.NDArray[np.bool_]] = {}  # by keys

    def _mask(self, key: int) -> npt.NDArray[np.bool_]:
        mask = self._masks.get(key)
        if mask is None:
            mask = self._masks[key] = np.zeros(len(self._words), dtype=np.bool_)
        return mask

    def _room_for(self, slots: int) -> None:
        if slots > len(self._words):
            capacity = max(slots, 2 * len(self._words))
            self._words = grown(self._words, capacity)
            for key, mask in self._masks.items():
                self._masks[key] = grown(mask, capacity)

    def set(self, slot: int, value: int) -> None:
        self._room_for(slot + 1)
        for key in keys(int(self._words[slot]) | value):
            self._mask(key)[slot] = (value & key_bits(key)) != 0
        self._words[slot] = value

    def set_many(self, start: int, values: list[int]) -> None:
        """Set the words of new slots start, start + 1, ... (all 0 so far)."""
        stop = start + len(values)
        self._room_for(stop)
        words = self._words[start:stop] = np.asarray(values, dtype=np.uint64)
        for key in keys(int(np.bitwise_or.reduce(words)) if len(words) else 0):
            self._mask(key)[start:stop] = (words & np.uint64(key_bits(key))) != 0

    def passing(self, word: int, n: int) -> npt.NDArray[np.bool_]:
        """Which of slots 0..n-1 share a bit with `word` (read only: it may be a kept mask)."""
        masks = [self._masks[key][:n] for key in query_keys(word) if key in self._masks]
        if not masks:
            return np.zeros(n, dtype=np.bool_)
        return masks[0] if len(masks) == 1 else functools.reduce(np.bitwise_or, masks)

    def nbytes(self) -> int:
        return self._words.nbytes + sum(mask.nbytes for mask in self._masks.values())
