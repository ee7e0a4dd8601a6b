"""Tests of the label budget allocation (Active-Sample, eq. 3.1)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers.allocation import active_sample, split_batch
from solvers.errors import InvalidInputError

relevance_values = st.floats(
    min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False
)
relevance_vectors = st.lists(relevance_values, min_size=1, max_size=30)
totals = st.integers(min_value=0, max_value=10**9)


@settings(max_examples=300, deadline=None)
@given(totals, relevance_vectors)
def test_active_sample_sums_to_total(total, relevance):
    counts = active_sample(total, relevance)
    assert counts.dtype == np.int64
    assert counts.shape == (len(relevance),)
    assert int(counts.sum()) == total


@settings(max_examples=300, deadline=None)
@given(totals, relevance_vectors)
def test_active_sample_respects_uniform_floor(total, relevance):
    counts = active_sample(total, relevance)
    floor = total // (2 * len(relevance))
    assert np.all(counts >= floor - 1)


@settings(max_examples=300, deadline=None)
@given(totals, relevance_vectors)
def test_active_sample_monotone_in_relevance(total, relevance):
    counts = active_sample(total, relevance)
    weights = np.abs(np.asarray(relevance))
    for a in range(len(relevance)):
        for b in range(len(relevance)):
            if weights[a] > weights[b]:
                assert counts[a] >= counts[b], (a, b)


@settings(max_examples=200, deadline=None)
@given(totals, relevance_vectors, st.randoms(use_true_random=False))
def test_active_sample_symmetric_under_permutation(total, relevance, rnd):
    permutation = list(range(len(relevance)))
    rnd.shuffle(permutation)
    counts = active_sample(total, relevance)
    permuted = active_sample(total, [relevance[i] for i in permutation])
    # Tasks with equal |nu| may swap a remainder label, so compare the
    # (|nu|, quota) pairs as multisets.
    weights = np.abs(np.asarray(relevance))
    original_pairs = sorted(zip(weights.tolist(), counts.tolist(), strict=True))
    permuted_pairs = sorted(
        zip(weights[permutation].tolist(), permuted.tolist(), strict=True)
    )
    assert original_pairs == permuted_pairs


@settings(max_examples=200, deadline=None)
@given(totals, relevance_vectors)
def test_active_sample_within_one_of_exact_share(total, relevance):
    counts = active_sample(total, relevance)
    weights = np.abs(np.asarray(relevance))
    n_tasks = len(relevance)
    if weights.sum() > 0:
        exact = (weights / (2 * weights.sum()) + 1 / (2 * n_tasks)) * total
    else:
        exact = np.full(n_tasks, total / n_tasks)
    assert np.all(np.abs(counts - exact) < 1 + 1e-6 * max(total, 1))


def test_active_sample_known_answer():
    # nu = (3, 1, 0): exact shares (0.375 + 1/6, 0.125 + 1/6, 1/6) * 100.
    counts = active_sample(100, [3.0, -1.0, 0.0])
    assert counts.tolist() == [54, 29, 17]


def test_active_sample_zero_relevance_is_uniform():
    assert active_sample(10, [0.0, 0.0, 0.0]).tolist() == [4, 3, 3]
    assert active_sample(9, np.zeros(3)).tolist() == [3, 3, 3]


def test_active_sample_single_task_gets_everything():
    assert active_sample(17, [0.4]).tolist() == [17]
    assert active_sample(17, [0.0]).tolist() == [17]


def test_active_sample_negative_relevance_uses_absolute_value():
    assert (
        active_sample(101, [-2.0, 1.0]).tolist()
        == active_sample(101, [2.0, 1.0]).tolist()
    )


def test_active_sample_zero_total():
    assert active_sample(0, [1.0, 2.0]).tolist() == [0, 0]


@pytest.mark.parametrize(
    ("total", "relevance", "argument"),
    [
        (-1, [1.0], "total"),
        (1.5, [1.0], "total"),
        (True, [1.0], "total"),
        (2**60, [1.0], "total"),
        (10, [], "relevance"),
        (10, [1.0, math.nan], "relevance"),
        (10, [1.0, math.inf], "relevance"),
        (10, [[1.0, 2.0]], "relevance"),
        (10, ["a"], "relevance"),
    ],
)
def test_active_sample_rejects_invalid_input(total, relevance, argument):
    with pytest.raises(InvalidInputError, match=argument):
        active_sample(total, relevance)


remaining_vectors = st.lists(
    st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30
)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10**7), remaining_vectors)
def test_split_batch_never_exceeds_remaining(batch, remaining):
    counts = split_batch(batch, remaining)
    assert counts.dtype == np.int64
    assert np.all(counts >= 0)
    assert np.all(counts <= np.asarray(remaining))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10**7), remaining_vectors)
def test_split_batch_sums_to_available(batch, remaining):
    counts = split_batch(batch, remaining)
    assert int(counts.sum()) == min(batch, sum(remaining))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**7), remaining_vectors)
def test_split_batch_within_one_of_proportional_share(batch, remaining):
    counts = split_batch(batch, remaining)
    total_need = sum(remaining)
    if total_need == 0:
        assert counts.sum() == 0
        return
    granted = min(batch, total_need)
    exact = np.asarray(remaining, dtype=float) * granted / total_need
    assert np.all(np.abs(counts - exact) < 1 + 1e-9)


def test_split_batch_known_answer():
    assert split_batch(10, [5, 3, 2]).tolist() == [5, 3, 2]
    assert split_batch(5, [6, 3, 1]).tolist() == [3, 2, 0]
    assert split_batch(100, [1, 0, 2]).tolist() == [1, 0, 2]


def test_split_batch_huge_counts_are_exact():
    counts = split_batch(10**18, [10**18, 10**18, 1])
    assert int(counts.sum()) == 10**18


@pytest.mark.parametrize(
    ("batch", "remaining", "argument"),
    [
        (-1, [1], "batch"),
        (2.0, [1], "batch"),
        (3, [], "remaining"),
        (3, [1, -1], "remaining"),
        (3, [1.5, 2], "remaining"),
        (3, [math.nan], "remaining"),
    ],
)
def test_split_batch_rejects_invalid_input(batch, remaining, argument):
    with pytest.raises(InvalidInputError, match=argument):
        split_batch(batch, remaining)


def test_active_sample_huge_relevance_does_not_overflow():
    assert active_sample(10, [1e308, 1e308, 0.0]).tolist() == [4, 4, 2]


def test_split_batch_huge_remaining_is_exact():
    need = 2**62 - 1
    counts = split_batch(2**62, [need, need, 2])
    assert int(counts.sum()) == 2**62
    # Shares are (2**62 - 1) * 2**62 / (2**63) each for the two large tasks.
    assert counts.tolist() == [2**61, 2**61 - 1, 1]


def test_split_batch_huge_batch_returns_remaining():
    assert split_batch(10**20, [10**18, 3]).tolist() == [10**18, 3]


@pytest.mark.parametrize(
    "remaining", [[10**19, 10**19], [2**62 + 1], [True], [1, "2"]]
)
def test_split_batch_rejects_out_of_range_remaining(remaining):
    with pytest.raises(InvalidInputError, match="remaining"):
        split_batch(10**20, remaining)
