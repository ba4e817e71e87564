"""Matching benchmark: the index against a plain per-pair implementation of the same rules, on the same data
and the same queries, in the same run.

Data has a realistic shape: 5-25 skills per student drawn from a popularity-skewed (Zipf) vocabulary,
locations from Noord-Holland's postcode areas, mixed levels and kinds. Prints figures and ratios; asserts
nothing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import numpy as np
from techport_matching.domain import (
    StudentProfile,
    VacancyProfile,
    reference_matches_for_student,
    reference_matches_for_vacancy,
)
from techport_matching.index import MatchingIndex
from techport_shared.events import KINDS, LEVELS
from techport_shared.postcodes import areas
from techport_shared.skills import vocabulary

MIN_SCORE, TOP_K_VACANCY, TOP_K_STUDENT = 0.5, 50, 10


class Generator:
    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.codes = sorted(vocabulary().skills)
        ranks = np.arange(1, len(self.codes) + 1)
        weights = 1.0 / ranks**1.1
        self.popularity = weights / weights.sum()
        self.rng.shuffle(self.codes)
        north_holland = [a for a in areas().values() if a.province == "North Holland"]
        self.places = np.array([(a.lat, a.lon) for a in north_holland])

    def skills(self, low: int, high: int) -> frozenset[str]:
        n = int(self.rng.integers(low, high + 1))
        picked = self.rng.choice(len(self.codes), size=n, replace=False, p=self.popularity)
        return frozenset(self.codes[i] for i in picked)

    def students(self, n: int) -> list[StudentProfile]:
        places = self.places[self.rng.integers(0, len(self.places), n)]
        levels = self.rng.choice(len(LEVELS), n, p=[0.05, 0.15, 0.25, 0.25, 0.05, 0.15, 0.04, 0.06, 0.0])
        result = []
        for i in range(n):
            seeking = frozenset(k for k in KINDS if self.rng.random() < 0.45) or frozenset({"internship"})
            result.append(
                StudentProfile(
                    student_id=f"s{i}",
                    school_id=f"school-{i % 40}",
                    level=LEVELS[levels[i]],
                    seeking=seeking,
                    skills=self.skills(5, 25),
                    lat=float(places[i, 0]),
                    lon=float(places[i, 1]),
                    max_distance_km=float(self.rng.choice([10, 15, 25, 25, 40, 60])),
                    consent_matching=bool(self.rng.random() < 0.95),
                )
            )
        return result

    def vacancies(self, n: int) -> list[VacancyProfile]:
        places = self.places[self.rng.integers(0, len(self.places), n)]
        result = []
        for i in range(n):
            required = tuple(sorted(self.skills(2, 6)))
            preferred = tuple(sorted(self.skills(0, 4) - set(required)))
            levels = frozenset(self.rng.choice(LEVELS[:8], size=int(self.rng.integers(0, 4)), replace=False))
            result.append(
                VacancyProfile(
                    vacancy_id=f"v{i}",
                    organisation_id=f"company-{i % 300}",
                    kind=str(self.rng.choice(KINDS)),
                    levels=levels,
                    required=required,
                    preferred=preferred,
                    lat=float(places[i, 0]),
                    lon=float(places[i, 1]),
                )
            )
        return result


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _time(call, items) -> list[float]:
    samples = []
    for item in items:
        started = time.perf_counter()
        call(item)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def bench_vacancy(generator: Generator, size: int, students: list[StudentProfile], queries: int) -> None:
    index = MatchingIndex()
    gc.collect()
    tracemalloc.start()
    index.load_students(students[:size])
    index.warm()  # as the service does after building its index
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    probes = generator.vacancies(queries)
    fast = _time(lambda v: index.match_vacancy(v, MIN_SCORE, TOP_K_VACANCY), probes)
    p50, p95 = _percentiles(fast)
    # The per-pair loop on a sample of the same students, scaled per pair to the full size.
    sample = students[: min(size, 20_000)]
    slow = _time(lambda v: reference_matches_for_vacancy(v, sample, MIN_SCORE, TOP_K_VACANCY), probes)
    slow = [ms * size / len(sample) for ms in slow]
    ratio = statistics.median(slow) / p50
    stats = index.stats()
    print(
        f"vacancy vs {size:>9,} students: p50 {p50:8.3f} ms  p95 {p95:8.3f} ms  | per-pair loop p50 "
        f"{statistics.median(slow):10.1f} ms  -> {ratio:7.0f}x  | "
        f"index arrays {stats.nbytes / 2**20:7.1f} MiB, "
        f"build peak {peak / 2**20:7.1f} MiB"
    )


def bench_student(generator: Generator, vacancies: int, queries: int) -> None:
    index = MatchingIndex()
    jobs = generator.vacancies(vacancies)
    for vacancy in jobs:
        index.upsert_vacancy(vacancy)
    index.warm()
    probes = generator.students(queries)
    fast = _time(lambda s: index.match_student(s, MIN_SCORE, TOP_K_STUDENT), probes)
    p50, p95 = _percentiles(fast)
    slow = _time(lambda s: reference_matches_for_student(s, jobs, MIN_SCORE, TOP_K_STUDENT), probes)
    ratio = statistics.median(slow) / p50
    print(
        f"student vs {vacancies:>7,} vacancies: p50 {p50:8.3f} ms  p95 {p95:8.3f} ms  | per-pair loop p50 "
        f"{statistics.median(slow):10.1f} ms  -> {ratio:7.0f}x"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks matching")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--vacancies", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    generator = Generator()
    started = time.perf_counter()
    students = generator.students(max(sizes))
    print(f"matching benchmark: generated {len(students):,} students in {time.perf_counter() - started:.1f}s")
    for size in sizes:
        bench_vacancy(generator, size, students, args.queries)
    bench_student(generator, args.vacancies, args.queries)
    print(
        "targets: vacancy vs 100k <= 10 ms p50, vs 1M <= 100 ms p50, student vs 20k <= 5 ms, "
        "1M index <= 1.5 GB, >= 100x the per-pair loop"
    )
