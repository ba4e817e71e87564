"""Locations are postcode areas: distances computed once per place, reach and proximity once per place and
radius (a zone), rather than per person."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from techport_shared.geo import EARTH_RADIUS_KM

from techport_matching.index.arrays import FLOAT, Columns, Floats, Rows


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
        self._columns = Columns(
            {"lon": (FLOAT, np.nan), "phi": (FLOAT, np.nan), "cos_phi": (FLOAT, np.nan)}, capacity=256
        )
        self._columns.size = 1  # place 0 is UNKNOWN
        self._rows = Rows()

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
        self._columns = Columns({"place": (np.intp, Places.UNKNOWN), "max_km": (FLOAT, np.nan)}, capacity=256)
        self._rows = Rows()

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
