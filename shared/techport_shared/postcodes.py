"""Dutch postcodes to coordinates, from GeoNames' PC4 data (CC BY 4.0, see data/README.md)."""

from __future__ import annotations

import csv
import re
import statistics
from dataclasses import dataclass
from functools import cache
from importlib import resources

from techport_shared.geo import haversine_km

POSTCODE_PATTERN = r"[1-9][0-9]{3} ?[A-Za-z]{2}"
_PC6 = re.compile(r"^\s*([1-9][0-9]{3})\s*([A-Za-z]{2})\s*$")
_PC4 = re.compile(r"^\s*([1-9][0-9]{3})\s*$")
# A PC4 whose centre lies farther than this from the median of its numeric neighbours is a listing error.
_OUTLIER_KM = 50.0
_NEIGHBOURHOOD = 10


@dataclass(frozen=True)
class PostcodeArea:
    pc4: str
    place: str
    province: str
    lat: float
    lon: float
    corrected: bool = False


def normalise_postcode(value: str) -> str:
    """`1971ab`, ` 1971 AB ` -> `1971 AB`. Raises ValueError for anything else."""
    match = _PC6.match(value)
    if not match:
        raise ValueError(f"not a Dutch postcode: {value!r}")
    return f"{match.group(1)} {match.group(2).upper()}"


def pc4_of(value: str) -> str:
    """The four digits of a PC6 or PC4 postcode."""
    match = _PC6.match(value) or _PC4.match(value)
    if not match:
        raise ValueError(f"not a Dutch postcode: {value!r}")
    return match.group(1)


def lookup(value: str) -> PostcodeArea | None:
    """The area of a postcode (PC6 or PC4), or None when it is malformed or unknown."""
    try:
        return areas().get(pc4_of(value))
    except ValueError:
        return None


@cache
def areas() -> dict[str, PostcodeArea]:
    rows: dict[str, list[PostcodeArea]] = {}
    with resources.files("techport_shared.data").joinpath("nl_pc4.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            area = PostcodeArea(
                row["pc4"], row["place"], row["province"], float(row["lat"]), float(row["lon"])
            )
            rows.setdefault(area.pc4, []).append(area)
    return {pc4: _resolve(pc4, candidates, rows) for pc4, candidates in rows.items()}


def _resolve(pc4: str, candidates: list[PostcodeArea], rows: dict[str, list[PostcodeArea]]) -> PostcodeArea:
    number = int(pc4)
    neighbours = [
        area
        for other in range(number - _NEIGHBOURHOOD, number + _NEIGHBOURHOOD + 1)
        if other != number
        for area in rows.get(str(other), [])
    ]
    if len(neighbours) < 3:
        return candidates[0]
    lat = statistics.median(a.lat for a in neighbours)
    lon = statistics.median(a.lon for a in neighbours)
    best = min(candidates, key=lambda a: haversine_km(a.lat, a.lon, lat, lon))
    if haversine_km(best.lat, best.lon, lat, lon) <= _OUTLIER_KM:
        return best
    # The listed place is as wrong as the position: take the neighbours' most common place and province.
    place = statistics.mode(a.place for a in neighbours)
    province = statistics.mode(a.province for a in neighbours)
    return PostcodeArea(pc4, place, province, lat, lon, corrected=True)
