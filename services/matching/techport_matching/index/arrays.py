"""The index's storage: columns that grow, ids in a fixed-width string array (ties ordered by id in
numpy), and rows made ahead within a memory budget (least recently used first out)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

FLOAT = np.float64
BYTE_COUNTS = 254  # counts of up to this many skills are kept in bytes, below the byte's 255 ("unreachable")
Floats = npt.NDArray[np.float64]


def grown(array: npt.NDArray[Any], capacity: int) -> npt.NDArray[Any]:
    """`array` in a larger one, zeros after it."""
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class Columns:
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


class Ids:
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


class Rows:
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
