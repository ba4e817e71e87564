"""Scores and the top k: the coverage and preferred fractions as tables, the candidates that can still make
the top k, and the partial sort with ties by id."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from techport_matching.domain import EPSILON
from techport_matching.index.arrays import Floats, Ids


def nth_best(values: Floats, nth: int) -> float:
    """The nth largest of `values` (1 <= nth <= len): a partial sort of a copy by the array's own method,
    which is np.partition less its Python wrapper (that costs as much as the sort on a few hundred values)."""
    part = values.copy()
    part.partition(len(part) - nth)
    return float(part[len(part) - nth])


def top(
    ids: Ids, slots: npt.NDArray[np.intp], scores: Floats, min_score: float, k: int, skip: set[str]
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
        bar = max(bar, nth_best(scores, want))
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


def combined_scores(coverage: Any, half_preferred: Any, half_proximity: Any, count: int) -> Floats:
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


def contenders(
    slots: npt.NDArray[np.intp], coverage: Any, half_reach: Any, min_score: float, want: int
) -> tuple[npt.NDArray[np.intp], Any, Any]:
    """The candidates that can still be among the best `want` at min_score or above, whatever their preferred
    skills: so only they need those counted. A score lies between its values with none and with all of the
    preferred skills (rounding is monotonic), so whose highest is below the `want`-th best lowest is out."""
    if len(slots) <= 32 * want:
        return slots, coverage, half_reach  # too few to gain from a cut
    lowest = combined_scores(coverage, 0.0, half_reach, len(slots))
    # The want-th best of a sample is no better than that of all: a bar that lets through all who can make it,
    # and a partial sort of a sample costs little.
    sample = lowest[:: max(1, len(lowest) // (16 * want))]
    bar = max(min_score, nth_best(sample, want))
    # The highest is at most EPSILON * 0.5 above the lowest, give or take roundings far below the margin's
    # 1e-12: who is below the bar by more cannot reach it (no second pass for the highest).
    keep = (lowest >= bar - (0.5 * EPSILON + 1e-12)).nonzero()[0]
    return slots[keep], at(coverage, keep), at(half_reach, keep)


def at(part: Any, keep: npt.NDArray[np.intp]) -> Any:
    """`part` at `keep`, or the scalar every candidate shares."""
    return part[keep] if isinstance(part, np.ndarray) else part


@functools.lru_cache(maxsize=1024)
def weighed_fractions(whole: int, weight: float) -> Floats:
    """weight * (part / whole) for every part 0..whole, as the score computes it."""
    table: Floats = weight * (np.arange(whole + 1) / whole)
    table.flags.writeable = False
    return table


def triangle(whole: int) -> int:
    """Where the fractions of `whole` start in a `fractions_by_whole` table."""
    return whole * (whole + 1) // 2


@functools.lru_cache(maxsize=64)
def fractions_by_whole(most: int, weight: float, if_none: float) -> Floats:
    """weight * (part / whole) at triangle(whole) + part, for every whole 0..most and part 0..whole (weight *
    if_none for a whole of 0): each slot's fraction is one gather, at the slot's own start plus its count."""
    wholes = (weighed_fractions(whole, weight) for whole in range(1, most + 1))
    table: Floats = np.concatenate([np.array([weight * if_none]), *wholes])
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=1024)
def least_matched(n_required: int, min_score: float) -> int | None:
    """The fewest required skills that can still reach `min_score` (with the whole tiebreak), computed as the
    score is, so the cut is exact; None when no number can."""
    for matched in range(n_required + 1):
        coverage = matched / n_required if n_required else 1.0
        if (1.0 - EPSILON) * coverage + EPSILON >= min_score:
            return matched
    return None
