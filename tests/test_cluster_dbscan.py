"""DBSCAN on the sparse Jaccard graph: sparse semantics, equality with dense scikit-learn,
renumbering, and the documented results for degenerate input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from jaccard_reference import clustered, dense_jaccard
from scipy import sparse
from sklearn.cluster import DBSCAN

from unreid.cluster import dbscan, jaccard_distance
from unreid.errors import ClusteringError


def _first_occurrence(labels: np.ndarray) -> np.ndarray:
    """Reference renumbering: clusters 0, 1, ... in order of their lowest index."""
    out = np.full(len(labels), -1)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels):
        if lab >= 0:
            out[i] = seen.setdefault(int(lab), len(seen))
    return out


def _graph(n: int, edges: dict[tuple[int, int], float]) -> sparse.csr_matrix:
    rows, cols, vals = [], [], []
    for (i, j), d in edges.items():
        rows += [i, j]
        cols += [j, i]
        vals += [d, d]
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n, n))


def test_dbscan_hand_case_stored_zero_is_a_neighbour_missing_entry_is_not():
    # Chain 0-1-2 at distance 0 (stored zeros, e.g. duplicate images), 3-4 at 0.3,
    # 5 alone; 2-3 at 0.5 > eps. min_samples=2 counts the sample itself.
    g = _graph(6, {(0, 1): 0.0, (1, 2): 0.0, (3, 4): 0.3, (2, 3): 0.5})
    assert g.nnz == 8  # the zeros are stored
    np.testing.assert_array_equal(dbscan(g, eps=0.4, min_samples=2), [0, 0, 0, 1, 1, -1])
    # min_samples=3: only 1 has three samples within eps (0, 1, 2); 0 and 2 are border.
    np.testing.assert_array_equal(dbscan(g, eps=0.4, min_samples=3), [0, 0, 0, -1, -1, -1])
    # eps reaches 0.5: one chain; eps is inclusive (<=).
    np.testing.assert_array_equal(dbscan(g, eps=0.5, min_samples=2), [0, 0, 0, 0, 0, -1])
    # The same values as a dense matrix mean something else: 0 everywhere off the graph.
    dense = g.toarray()
    np.testing.assert_array_equal(dbscan(dense, eps=0.4, min_samples=2), np.zeros(6))


def test_dbscan_numbers_clusters_by_lowest_index_and_ignores_the_diagonal():
    # Clusters {1, 3} and {0, 2, 4}: 0 comes first, so {0, 2, 4} is cluster 0.
    g = _graph(5, {(1, 3): 0.1, (0, 2): 0.1, (2, 4): 0.1})
    g.setdiag([0.9, 0.9, 0.9, 0.9, 0.9])  # a wrong diagonal: a sample is its own neighbour
    np.testing.assert_array_equal(dbscan(g, eps=0.2, min_samples=2), [0, 1, 0, 1, 0])


@pytest.mark.parametrize(
    "feats, eps, min_samples",
    [
        (clustered(30, 10, 32, 0.8, seed=11), 0.6, 4),
        (clustered(30, 10, 32, 1.2, seed=12), 0.5, 4),  # hard: many outliers
        (np.random.default_rng(13).standard_normal((300, 16)), 0.6, 4),
    ],
)
def test_dbscan_on_sparse_jaccard_equals_sklearn_on_dense(feats, eps, min_samples):
    ref = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(
        dense_jaccard(feats, 30, 6)
    ).labels_
    got = dbscan(jaccard_distance(feats, k1=30, k2=6, cutoff=eps), eps, min_samples)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, _first_occurrence(ref))
    assert got.max() >= 10  # a non-trivial clustering


@pytest.mark.parametrize("seed", range(6))
def test_dbscan_equals_sklearn_on_random_sparse_graphs_symmetric_or_not(seed):
    # Sparse random graphs with many border samples between clusters (where the order of
    # scikit-learn's expansion decides), explicit zeros, a wrong diagonal; the last seeds
    # are asymmetric (scikit-learn's directed expansion, the fallback path).
    rng = np.random.default_rng(seed)
    n = 120
    rows, cols = rng.integers(0, n, 150), rng.integers(0, n, 150)
    vals = rng.choice([0.0, 0.1, 0.2, 0.3, 0.5], 150)
    if seed < 4:
        rows, cols, vals = np.r_[rows, cols], np.r_[cols, rows], np.r_[vals, vals]
    g = sparse.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()  # duplicates summed
    g.setdiag(0.9)  # ignored: a sample is its own neighbour
    assert (g.data == 0).any()  # stored zeros are neighbours at any eps
    coo = g.tocoo()
    dense = np.full((n, n), 10.0)  # a missing entry: never a neighbour
    dense[coo.row, coo.col] = coo.data
    np.fill_diagonal(dense, 0.0)
    clusters = []
    for eps, min_samples in [(0.2, 2), (0.3, 3), (0.5, 3), (0.5, 4)]:
        ref = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(dense).labels_
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # all outliers, at some settings
            got = dbscan(g, eps, min_samples)
        np.testing.assert_array_equal(got, _first_occurrence(ref))
        clusters.append(int(got.max()) + 1)
    assert max(clusters) >= 3, clusters  # non-trivial: several clusters


def test_dbscan_all_outliers_warns_with_the_knob():
    g = _graph(5, {(0, 1): 0.3})
    with pytest.warns(UserWarning, match=r"all 5 samples are outliers.*raise cluster\.eps"):
        labels = dbscan(g, eps=0.2, min_samples=2)
    np.testing.assert_array_equal(labels, -1)


def test_dbscan_fewer_samples_than_min_samples_gives_all_outliers():
    g = _graph(3, {(0, 1): 0.0, (1, 2): 0.0})
    with pytest.warns(UserWarning, match="N=3 < min_samples=4"):
        labels = dbscan(g, eps=0.5, min_samples=4)
    np.testing.assert_array_equal(labels, [-1, -1, -1])


def test_dbscan_empty_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = dbscan(sparse.csr_matrix((0, 0)), eps=0.5)
    assert labels.shape == (0,) and labels.dtype == np.int64


@pytest.mark.parametrize(
    "graph, eps, min_samples, match",
    [
        (sparse.csr_matrix((3, 4)), 0.5, 2, "square"),
        (_graph(3, {(0, 1): -0.1}), 0.5, 2, "negative, NaN or inf"),
        (_graph(3, {(0, 1): np.nan}), 0.5, 2, "negative, NaN or inf"),
        (_graph(3, {(0, 1): 0.1}), 0.0, 2, "cluster.eps"),
        (_graph(3, {(0, 1): 0.1}), float("nan"), 2, "cluster.eps"),
        (_graph(3, {(0, 1): 0.1}), 0.5, 0, "cluster.min_samples"),
    ],
)
def test_dbscan_rejects_bad_input(graph, eps, min_samples, match):
    with pytest.raises(ClusteringError, match=match):
        dbscan(graph, eps, min_samples)
