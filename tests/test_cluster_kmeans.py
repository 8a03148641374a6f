"""Spherical k-means: exact hand cases, Lloyd fixed-point properties, determinism, bad input."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from unreid.cluster import kmeans
from unreid.errors import ClusteringError

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def unit(deg) -> np.ndarray:
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=-1)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def planted(n_per: int, k: int, d: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(k), n_per)
    x = rng.normal(size=(k, d))[ids] + noise * rng.normal(size=(len(ids), d))
    return x.astype(np.float32), ids


def test_kmeans_three_symmetric_groups_give_exact_centres():
    # +-5 degrees around 0, 120 and 240 degrees: each centre is exactly the middle direction.
    x = unit([-5, 5, 115, 125, 235, 245]) * np.array([[1.0], [3.0], [2.0], [2.0], [0.5], [0.5]])
    labels, centres = kmeans(x, 3, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (6,)
    assert centres.dtype == np.float32 and centres.shape == (3, 2)
    assert same_partition(labels, np.array([0, 0, 1, 1, 2, 2]))
    np.testing.assert_allclose(centres[labels[[0, 2, 4]]], unit([0, 120, 240]), atol=1e-6)


def test_kmeans_single_cluster_centre_is_normalised_mean_direction():
    x = unit([0, 90])  # mean direction 45 degrees
    labels, centres = kmeans(x, 1, seed=3)
    assert labels.tolist() == [0, 0]
    np.testing.assert_allclose(centres[0], unit(45), atol=1e-6)


def test_kmeans_k_equal_n_gives_every_sample_its_own_cluster():
    x, _ = planted(1, 7, 5, 0.0, seed=1)
    labels, centres = kmeans(x, 7, seed=0)
    assert sorted(labels.tolist()) == list(range(7))
    np.testing.assert_allclose(
        centres[labels], x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6
    )


def test_kmeans_recovers_planted_clusters_and_is_deterministic():
    x, ids = planted(12, 8, 32, 0.3, seed=2)
    labels, centres = kmeans(x, 8, seed=5)
    assert same_partition(labels, ids)
    labels2, centres2 = kmeans(x, 8, seed=5)
    assert np.array_equal(labels, labels2) and np.array_equal(centres, centres2)


def test_kmeans_converged_result_is_a_lloyd_fixed_point():
    # tol=0 runs until no assignment changes: labels are the argmax of the centres and
    # every centre is the normalised mean of its members.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    labels, centres = kmeans(x, 9, seed=1, tol=0.0, max_iter=1000, backend="torch")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ centres.T
    assert np.all(sims[np.arange(200), labels] >= sims.max(axis=1) - 1e-6)
    for c in range(9):
        mean = xn[labels == c].sum(axis=0)
        np.testing.assert_allclose(centres[c], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-6)


def test_kmeans_ignores_feature_scale_and_accepts_tensors():
    x, _ = planted(6, 4, 8, 0.5, seed=3)
    l1, c1 = kmeans(x, 4, seed=2)
    l2, c2 = kmeans(torch.from_numpy(x * 13.0), 4, seed=2)
    assert np.array_equal(l1, l2)
    np.testing.assert_allclose(c1, c2, atol=1e-6)


def test_kmeans_with_fewer_distinct_points_than_k_leaves_clusters_empty():
    x = np.repeat(unit([0, 90]), 5, axis=0)  # two distinct directions, k = 3
    labels, centres = kmeans(x, 3, seed=0)
    assert same_partition(labels, np.repeat([0, 1], 5))
    assert len(np.unique(labels)) == 2
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(
        np.float32,
        st.tuples(st.integers(1, 25), st.integers(1, 4)),
        elements=st.floats(-4, 4, width=32),
    ),
    k_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_kmeans_labels_are_nearest_centres_on_random_data(x, k_frac, seed):
    x = x[np.linalg.norm(x.astype(np.float64), axis=1) > 1e-3]
    if len(x) == 0:
        return
    k = 1 + int(k_frac * (len(x) - 1))
    labels, centres = kmeans(x, k, seed=seed, backend="torch")
    assert labels.shape == (len(x),) and centres.shape == (k, x.shape[1])
    assert labels.min() >= 0 and labels.max() < k
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ centres.T
    assert np.all(sims[np.arange(len(x)), labels] >= sims.max(axis=1) - 1e-5)


@pytest.mark.parametrize(
    ("features", "k", "seed", "match"),
    [
        (np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]), 2, 0, "NaN/inf"),
        (np.array([[1.0, 0.0], [np.inf, 1.0]]), 1, 0, "NaN/inf"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), 1, 0, "all zeros"),
        (np.ones((3, 2)), 4, 0, "k=4"),
        (np.ones((3, 2)), 0, 0, "k=0"),
        (np.ones((3, 2)), True, 0, "k=True"),
        (np.ones((3, 2)), 2, -1, "seed"),
        (np.ones(3), 1, 0, "shape"),
        (np.ones((0, 2)), 1, 0, "shape"),
    ],
)
def test_kmeans_bad_input_raises_one_line_clustering_error(features, k, seed, match):
    with pytest.raises(ClusteringError, match=match) as err:
        kmeans(features, k, seed=seed)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
def test_kmeans_faiss_backend_matches_torch():
    x, _ = planted(10, 6, 16, 0.6, seed=7)
    lt, ct = kmeans(x, 6, seed=1, backend="torch")
    lf, cf = kmeans(x, 6, seed=1, backend="faiss")
    assert np.array_equal(lt, lf)
    np.testing.assert_allclose(ct, cf, atol=1e-5)


@pytest.mark.skipif(HAS_FAISS, reason="faiss installed")
def test_kmeans_faiss_backend_without_faiss_is_a_clear_error():
    with pytest.raises(ClusteringError, match="faiss"):
        kmeans(np.eye(3), 2, seed=0, backend="faiss")
