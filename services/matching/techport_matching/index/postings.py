"""Skills as integer ids in inverted postings; the most common skills kept per slot instead (a byte row of
students, a bit of a word of vacancies), so a count of required skills is a sum of rows or a popcount."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from techport_matching.index.arrays import BYTE_COUNTS, grown


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
            self._bits = grown(self._bits, max(slots, 2 * len(self._bits)))

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
            self._rows = [grown(row, self._capacity) for row in self._rows]

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
