"""Held-out evaluation of a target parameter: pairwise accuracy, log-loss, regret."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.demo.data import Comparisons, FeatureMap, UserRatings, all_comparisons
from app.demo.data import candidate_sets as draw_candidate_sets


@dataclass(frozen=True)
class HeldOut:
    """Everything a method is evaluated on, for one target user and seed.

    Attributes
    ----------
    comparisons : Comparisons
        Every pair of held-out movies that the target user rated differently
        (capped at 20,000 pairs).
    ratings : UserRatings
        The target user's held-out movies and their ratings.
    candidate_sets : list of ndarray of int
        Positions into ``ratings``, one array of candidate movies per context.
    contexts : list of ndarray of shape (set_size, d)
        Features of each candidate set, as sent to the policy.
    """

    comparisons: Comparisons
    ratings: UserRatings
    candidate_sets: list[np.ndarray]
    contexts: list[np.ndarray]


def make_heldout(
    heldout: UserRatings,
    feature_map: FeatureMap,
    rng: np.random.Generator,
    *,
    n_contexts: int,
    set_size: int,
) -> HeldOut:
    """Build the held-out comparisons and candidate sets of one target user."""
    comparisons = all_comparisons(heldout, feature_map, rng)
    sets = draw_candidate_sets(heldout, n_contexts, set_size, rng)
    contexts = [feature_map.features[heldout.rows[chosen]] for chosen in sets]
    return HeldOut(comparisons, heldout, sets, contexts)


def pairwise_accuracy(theta: np.ndarray, comparisons: Comparisons) -> float:
    """Fraction of comparisons whose label the sign of ``x . theta`` predicts.

    A score of exactly 0 counts as half right, like a coin flip.
    """
    scores = comparisons.X @ theta
    correct = np.where(scores > 0.0, comparisons.y, 1.0 - comparisons.y)
    correct = np.where(scores == 0.0, 0.5, correct)
    return float(np.mean(correct))


def log_loss(theta: np.ndarray, comparisons: Comparisons) -> float:
    """Mean negative log-likelihood per comparison of the logistic model, in nats.

    ``-[y log sigmoid(t) + (1 - y) log sigmoid(-t)]`` with ``t = x . theta``,
    computed as ``log(1 + exp(-t))`` terms through ``logaddexp`` so that large
    scores neither overflow nor round to ``log(0)``.
    """
    scores = comparisons.X @ theta
    y = comparisons.y
    losses = y * np.logaddexp(0.0, -scores) + (1.0 - y) * np.logaddexp(0.0, scores)
    return float(np.mean(losses))


def mean_regret(chosen: Sequence[int], heldout: HeldOut) -> float:
    """Return the mean regret in stars: best rating in a set minus the chosen one's."""
    if len(chosen) != len(heldout.candidate_sets):
        raise ValueError(
            f"expected one choice per context ({len(heldout.candidate_sets)}), "
            f"got {len(chosen)}"
        )
    regrets = [
        float(np.max(heldout.ratings.ratings[candidates]))
        - float(heldout.ratings.ratings[candidates[int(action)]])
        for candidates, action in zip(heldout.candidate_sets, chosen, strict=True)
    ]
    return float(np.mean(regrets))


def random_choice_regret(heldout: HeldOut) -> float:
    """Expected regret of picking a candidate uniformly at random, in stars."""
    regrets = [
        float(np.max(heldout.ratings.ratings[candidates]))
        - float(np.mean(heldout.ratings.ratings[candidates]))
        for candidates in heldout.candidate_sets
    ]
    return float(np.mean(regrets))
