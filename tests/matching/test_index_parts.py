"""The index's parts on their own: skill counts however skills are kept, and the order of equal scores."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from techport_matching.index import Ids, Postings, SkillBits, SkillRows, top

SKILLS = 12  # ids 0..11 are held; 12 and 13 are asked for but held by nobody


@settings(max_examples=150, deadline=None)
@given(
    holders=st.lists(st.sets(st.integers(0, SKILLS - 1), max_size=8), min_size=1, max_size=60),
    common_after=st.integers(1, 30),
    most_common=st.integers(0, 6),
    batch=st.integers(1, 60),
    queries=st.lists(st.lists(st.integers(0, SKILLS + 1), unique=True, max_size=6), min_size=1, max_size=5),
)
def test_counts_agree_with_counting_each_slot(holders, common_after, most_common, batch, queries) -> None:
    # Common skills (rows or bits) and postings mixed, added in batches as a build and events do: each slot's
    # count is how many of the asked skills it has, and counting leaves the index as it was.
    n = len(holders)
    kinds: list[Postings] = [SkillRows(common_after, most_common), SkillBits(common_after, most_common)]
    for postings in kinds:
        for start in range(0, n, batch):
            by_skill: dict[int, list[int]] = {}
            for slot in range(start, min(start + batch, n)):
                for skill in sorted(holders[slot]):
                    by_skill.setdefault(skill, []).append(slot)
            for skill, slots in by_skill.items():
                postings.add_many(skill, np.array(slots, dtype=np.intp))
        every_other = np.arange(0, n, 2)
        for skills in queries:
            expected = [len(set(skills) & held) for held in holders]
            assert postings.counts(skills, n).tolist() == expected
            assert postings.counts(skills, n).tolist() == expected  # the first count changed nothing
            assert postings.count_at(skills, every_other, n).tolist() == expected[::2]


entity_id = st.text(alphabet="ab9.-:_", min_size=1, max_size=12)  # what EntityId allows, shorter


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    built=st.lists(entity_id, unique=True, max_size=30),
    in_id_order=st.booleans(),
    later=st.lists(entity_id, unique=True, max_size=10),
    k=st.integers(1, 40),
    skip_some=st.booleans(),
)
def test_equal_scores_are_ordered_by_id(data, built, in_id_order, later, k, skip_some) -> None:
    # Ids of different lengths (a longer one may come later, and the array widens), a build in id order or
    # not, then single additions: equal scores come out in the reference's order, by id as a string.
    ids = Ids()
    names = sorted(built) if in_id_order else list(built)
    ids.extend(names)
    for name in later:
        if name not in names:
            ids.extend([name])
            names.append(name)
    if not names:
        return
    scores = np.array(
        data.draw(st.lists(st.sampled_from([0.25, 0.5, 0.75]), min_size=len(names), max_size=len(names)))
    )
    skip = set(names[::3]) if skip_some else set()
    found = top(ids, np.arange(len(names)), scores, 0.5, k, skip)
    expected = sorted(
        (
            (name, score)
            for name, score in zip(names, scores.tolist(), strict=True)
            if score >= 0.5 and name not in skip
        ),
        key=lambda pair: (-pair[1], pair[0]),
    )
    assert found == expected[:k]
