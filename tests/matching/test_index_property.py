"""The vectorised index and the plain per-pair reference agree: same eligible pairs, same order."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from techport_matching.domain import (
    EPSILON,
    StudentProfile,
    VacancyProfile,
    reference_matches_for_student,
    reference_matches_for_vacancy,
)
from techport_matching.index import Gates, MatchingIndex, combined_scores, contenders
from techport_shared.events import KINDS, LEVELS

SKILLS = [f"skill.{i}" for i in range(12)]
coordinate = st.one_of(st.none(), st.tuples(st.floats(52.2, 52.7), st.floats(4.4, 5.2)))


# Strategies made once: hypothesis spends more on making and checking a strategy than on drawing from it.
_LEVEL = st.sampled_from(LEVELS)
_SEEKING = st.sets(st.sampled_from(KINDS), min_size=1)
_SKILL_SET = st.sets(st.sampled_from(SKILLS), max_size=8)
_REACH = st.sampled_from([5.0, 15.0, 25.0, 40.0, 80.0])
_REQUIRED = st.lists(st.sampled_from(SKILLS), unique=True, max_size=6)
_PREFERRED = st.lists(st.sampled_from(SKILLS), unique=True, max_size=3)
_KIND = st.sampled_from(KINDS)
_LEVELS_WANTED = st.sets(st.sampled_from(LEVELS), max_size=3)


@st.composite
def students(draw, n: int) -> list[StudentProfile]:
    result = []
    for i in range(n):
        location = draw(coordinate)
        result.append(
            StudentProfile(
                # Ids of different lengths: "s10" sorts before "s2", as ties are ordered by id.
                student_id=f"s{i}",
                school_id=None,
                level=draw(_LEVEL),
                seeking=frozenset(draw(_SEEKING)),
                skills=frozenset(draw(_SKILL_SET)),
                lat=None if location is None else location[0],
                lon=None if location is None else location[1],
                max_distance_km=draw(_REACH),
                consent_matching=draw(st.booleans()),
            )
        )
    return result


@st.composite
def vacancies(draw, n: int) -> list[VacancyProfile]:
    result = []
    for i in range(n):
        location = draw(coordinate)
        required = draw(_REQUIRED)
        preferred = [skill for skill in draw(_PREFERRED) if skill not in required]
        result.append(
            VacancyProfile(
                vacancy_id=f"v{i}",
                organisation_id="c",
                kind=draw(_KIND),
                levels=frozenset(draw(_LEVELS_WANTED)),
                required=tuple(required),
                preferred=tuple(preferred),
                lat=None if location is None else location[0],
                lon=None if location is None else location[1],
            )
        )
    return result


def _same(fast: list[tuple[str, float]], slow: list[tuple[str, float]]) -> None:
    assert [i for i, _ in fast] == [i for i, _ in slow]
    assert all(
        math.isclose(a, b, rel_tol=0, abs_tol=1e-12) for (_, a), (_, b) in zip(fast, slow, strict=True)
    )


# The cases both directions are compared on.
against_the_reference = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
query_cases = given(
    data=st.data(),
    min_score=st.sampled_from([0.0, 0.3, 0.5, 0.75]),
    k=st.integers(1, 40),
    # Skills that this many have are kept per slot (rows, bits), the others as postings: both ways, and mixed.
    common=st.sampled_from([2, 6, 512]),
    # Distances and reach made ahead for every place, or as queries come.
    warm=st.booleans(),
)


@against_the_reference
@query_cases
def test_vacancy_against_students(data, min_score: float, k: int, common: int, warm: bool) -> None:
    people = data.draw(students(40))
    [vacancy] = data.draw(vacancies(1))
    index = MatchingIndex(common_skill_after=common)
    index.load_students(people[:20])
    for student in people[20:]:
        index.upsert_student(student)
    if warm:
        index.warm()
    _same(
        index.match_vacancy(vacancy, min_score, k),
        reference_matches_for_vacancy(vacancy, people, min_score, k),
    )


@against_the_reference
@query_cases
def test_student_against_vacancies(data, min_score: float, k: int, common: int, warm: bool) -> None:
    jobs = data.draw(vacancies(40))
    [student] = data.draw(students(1))
    index = MatchingIndex(common_skill_after=common)
    for vacancy in jobs:
        index.upsert_vacancy(vacancy)
    if warm:
        index.warm()
    _same(
        index.match_student(student, min_score, k), reference_matches_for_student(student, jobs, min_score, k)
    )


def test_updates_and_removals_are_reflected() -> None:
    base = StudentProfile(
        "s1", None, "mbo-4", frozenset({"job"}), frozenset({"a", "b"}), None, None, 25.0, True
    )
    vacancy = VacancyProfile("v1", "c", "job", frozenset(), ("a", "b"), (), None, None)
    index = MatchingIndex()
    index.upsert_student(base)
    assert [i for i, _ in index.match_vacancy(vacancy, 0.5, 10)] == ["s1"]
    index.upsert_student(
        StudentProfile("s1", None, "mbo-4", frozenset({"job"}), frozenset({"c"}), None, None, 25.0, True)
    )
    assert index.match_vacancy(vacancy, 0.5, 10) == []  # the old skills are gone with the old slot
    index.upsert_student(base)
    index.remove_student("s1")
    assert index.match_vacancy(vacancy, 0.0, 10) == []
    index.upsert_vacancy(vacancy)
    index.set_full("v1", True)
    assert index.match_student(base, 0.0, 10) == []
    assert index.stale_fraction() > 0


def test_counts_beyond_a_byte_agree_with_the_reference() -> None:
    # Counts are kept in bytes while they fit; more skills than that (beyond the contract's limits, which the
    # index does not rely on) are counted in 64 bits, and the cut by required skills still holds.
    rng = np.random.default_rng(3)
    many = [f"skill.{i}" for i in range(400)]

    def picked(n: int) -> list[str]:
        return [many[i] for i in sorted(rng.choice(len(many), n, replace=False))]

    people = [
        StudentProfile(
            f"s{i:02d}", None, "hbo", frozenset({"job"}), frozenset(picked(390)), 52.4, 4.6, 40.0, True
        )
        for i in range(30)
    ]
    jobs = [
        VacancyProfile(f"v{i:02d}", "c", "job", frozenset(), tuple(picked(300)), tuple(picked(3)), 52.4, 4.7)
        for i in range(30)
    ]
    index = MatchingIndex(common_skill_after=10)
    index.load_students(people)
    for vacancy in jobs:
        index.upsert_vacancy(vacancy)
    for min_score in (0.0, 0.5, 0.7):
        assert index.match_student(people[0], min_score, 10)  # not vacuous: some reach these bars
        _same(
            index.match_student(people[0], min_score, 10),
            reference_matches_for_student(people[0], jobs, min_score, 10),
        )
        _same(
            index.match_vacancy(jobs[0], min_score, 10),
            reference_matches_for_vacancy(jobs[0], people, min_score, 10),
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), min_score=st.sampled_from([0.0, 0.5]))
def test_places_and_common_skills_added_after_a_query_count_in_the_next(data, min_score: float) -> None:
    # A query caches the distances from its point to the places known then, and skills become common (bits)
    # as students arrive: students at new places, or with newly common skills, must count all the same.
    people = data.draw(students(40))
    [vacancy] = data.draw(vacancies(1))
    index = MatchingIndex(common_skill_after=4)
    for count, student in enumerate(people, start=1):
        index.upsert_student(student)
        if count % 10 == 0:
            _same(
                index.match_vacancy(vacancy, min_score, 40),
                reference_matches_for_vacancy(vacancy, people[:count], min_score, 40),
            )


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    size=st.integers(1, 400),
    want=st.integers(1, 8),
    min_score=st.sampled_from([0.0, 0.5, 0.9]),
)
def test_the_cut_before_preferred_skills_keeps_everyone_who_can_make_the_top(
    data, size: int, want: int, min_score: float
) -> None:
    # Whatever share of their preferred skills the candidates turn out to have, the best `want` of them at
    # min_score or above are among the contenders.
    levels = st.sampled_from([i / 6 for i in range(7)])
    reach = st.one_of(st.just(-math.inf), st.floats(0.0, 0.5))
    coverage = np.array(data.draw(st.lists(levels, min_size=size, max_size=size))) * (1.0 - EPSILON)
    half_reach = np.array(data.draw(st.lists(reach, min_size=size, max_size=size)))
    half_preferred = np.array(
        data.draw(st.lists(st.sampled_from([0.0, 0.125, 0.25, 0.5]), min_size=size, max_size=size))
    )
    slots = np.arange(size)
    scores = combined_scores(coverage, half_preferred, half_reach, size)
    best = sorted(
        (-score, int(slot)) for slot, score in zip(slots, scores, strict=True) if score >= min_score
    )
    kept, kept_coverage, kept_reach = contenders(slots, coverage, half_reach, min_score, want)
    assert {slot for _, slot in best[:want]} <= set(kept.tolist())
    assert np.array_equal(kept_coverage, coverage[kept]) and np.array_equal(kept_reach, half_reach[kept])


gate_word = st.one_of(
    st.integers(0, 2**64 - 1),
    # A kind open to any level, or one level of one kind: the words students and vacancies have.
    st.builds(
        lambda kind, bit, any_level: (0xFFFF if any_level else 1 << bit) << (16 * kind),
        st.integers(0, 3),
        st.integers(0, 15),
        st.booleans(),
    ),
)


@settings(max_examples=100, deadline=None)
@given(
    first=st.lists(gate_word, max_size=30),
    changes=st.lists(st.tuples(st.integers(0, 40), gate_word), max_size=30),
    more=st.lists(gate_word, max_size=30),
    queries=st.lists(gate_word, min_size=1, max_size=10),
)
def test_gate_masks_agree_with_the_words(first, changes, more, queries) -> None:
    # The kept masks answer what testing every word would, through bulk loads and changes of single slots.
    gates, words = Gates(), list(first)
    gates.set_many(0, first)
    for slot, value in changes:
        words.extend([0] * (slot + 1 - len(words)))
        words[slot] = value
        gates.set(slot, value)
    gates.set_many(len(words), more)
    words.extend(more)
    for query in queries:
        expected = [(word & query) != 0 for word in words]
        assert gates.passing(query, len(words)).tolist() == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), min_score=st.sampled_from([0.0, 0.5]))
def test_students_added_after_warming_count_at_a_site_made_ahead(data, min_score: float) -> None:
    # warm() keeps which students are in reach of each known site; students who come after (new places and
    # distances among them) must be in reach of such a site exactly when the reference says so.
    people = data.draw(students(40))
    [vacancy] = data.draw(vacancies(1))
    located = [p for p in people[:20] if p.lat is not None]
    if not located:
        return
    site = data.draw(st.sampled_from(located))
    vacancy = replace(vacancy, lat=site.lat, lon=site.lon)
    index = MatchingIndex(common_skill_after=4)
    index.load_students(people[:20])
    index.warm()
    for count, student in enumerate(people[20:], start=21):
        index.upsert_student(student)
        if count % 5 == 0:
            assert index.reach_is_kept(vacancy)  # the kept mask is tested
            _same(
                index.match_vacancy(vacancy, min_score, 40),
                reference_matches_for_vacancy(vacancy, people[:count], min_score, 40),
            )
