"""Cosine kNN: hand cases, brute force with ties, chunking, faiss agreement, the approximate
search against the exact one, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unreid.cluster import dbscan, jaccard_distance, knn
from unreid.cluster.knn import SEARCHES, resolve_search
from unreid.config import RULES, load_config
from unreid.errors import ClusteringError, ConfigError

knn_module = sys.modules["unreid.cluster.knn"]


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full argsort: self first, then decreasing cosine, ties by increasing index."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    key = sim.copy()
    np.fill_diagonal(key, np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


def test_knn_hand_case_on_a_circle():
    # Unit vectors at 0, 10, 30 and 100 degrees (norms 1, 2, 3, 0.5: normalised inside).
    deg = np.deg2rad([0.0, 10.0, 30.0, 100.0])
    x = np.stack([np.cos(deg), np.sin(deg)], axis=1) * np.array([[1.0], [2.0], [3.0], [0.5]])
    ids, sims = knn(x, 3)
    np.testing.assert_array_equal(ids, [[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 2, 1]])
    expected = np.cos(np.deg2rad([[0, 10, 30], [0, 10, 20], [0, 20, 30], [0, 70, 90]]))
    np.testing.assert_allclose(sims, expected, atol=1e-6)
    assert ids.dtype == np.int64 and sims.dtype == np.float32 and ids.shape == (4, 3)


def test_knn_self_first_and_ties_by_index_with_duplicates():
    # Rows 0, 2 and 3 are identical: each sees itself first, then the others by index.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    ids, sims = knn(x, 4)
    np.testing.assert_array_equal(ids[0], [0, 2, 3, 4])
    np.testing.assert_array_equal(ids[2], [2, 0, 3, 4])
    np.testing.assert_array_equal(ids[3], [3, 0, 2, 4])
    # Ties at the k-th place: 1 is equally close to 0, 2, 3 (cos 0) after 4; k=3 keeps 0.
    np.testing.assert_array_equal(knn(x, 3)[0][1], [1, 4, 0])
    np.testing.assert_allclose(sims[0], [1, 1, 1, np.sqrt(0.5)], atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    dim=st.integers(2, 5),
    seed=st.integers(0, 2**16),
    chunk=st.integers(1, 70),
    data=st.data(),
)
def test_knn_matches_brute_force_including_exact_ties(n, dim, seed, chunk, data):
    # Signed permutations of one integer vector: equal norms and integer dot products,
    # so tied cosines are bitwise equal and only the documented rule orders them.
    rng = np.random.default_rng(seed)
    base = np.zeros(dim)
    base[:2] = [2.0, 1.0]
    x = np.stack([rng.permutation(base) * rng.choice([-1.0, 1.0], dim) for _ in range(n)])
    k = data.draw(st.integers(1, n))
    ids, sims = knn(torch.from_numpy(x), k, chunk=chunk)
    dots = x @ x.T  # exact integers
    np.fill_diagonal(dots, np.inf)
    ref_ids = np.argsort(-dots, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, brute_force(x, k)[1], atol=1e-6)


def test_knn_chunking_and_input_types_do_not_change_the_answer():
    x = np.random.default_rng(0).standard_normal((257, 16)).astype(np.float32)
    ids, sims = knn(x, 10)
    for chunk in (1, 7, 256, 1000):
        ids_c, sims_c = knn(torch.from_numpy(x), 10, chunk=chunk)
        np.testing.assert_array_equal(ids_c, ids)
        np.testing.assert_allclose(sims_c, sims, atol=1e-6)
    ref_ids, _ = brute_force(x, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(knn(x.astype(np.float16), 10, backend="torch")[0][:, 0],
                                  np.arange(257))


def test_knn_faiss_backend_agrees():
    pytest.importorskip("faiss")
    x = np.random.default_rng(1).standard_normal((500, 32)).astype(np.float32)
    ids_t, sims_t = knn(x, 15, backend="torch")
    ids_f, sims_f = knn(x, 15, backend="faiss")
    assert (ids_f[:, 0] == np.arange(500)).all()
    # Same neighbour sets (random floats: no exact ties), same similarities.
    np.testing.assert_array_equal(np.sort(ids_f, axis=1), np.sort(ids_t, axis=1))
    np.testing.assert_allclose(sims_f, sims_t, atol=1e-5)


@pytest.mark.parametrize(
    "features, k, match",
    [
        (np.zeros((0, 4)), 1, "non-empty"),
        (np.ones(5), 1, "non-empty"),
        (np.ones((5, 3)), 6, r"k=6 must lie in \[1, N=5\]"),
        (np.ones((5, 3)), 0, r"k=0 must lie"),
        (np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), 2, r"all zero \(first rows \[1\]\)"),
        (np.array([[1.0, 0.0], [np.inf, 0.0], [1.0, np.nan]]), 2, r"2 feature rows contain NaN"),
    ],
)
def test_knn_rejects_bad_input(features, k, match):
    with pytest.raises(ClusteringError, match=match):
        knn(features, k)


def test_knn_rejects_unknown_backend():
    with pytest.raises(ClusteringError, match="backend"):
        knn(np.ones((3, 2)), 1, backend="annoy")  # type: ignore[arg-type]


# ---------------------------------------------------------------- approximate search


def _planted(n_ids: int, per_id: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    x = np.repeat(centres, per_id, axis=0) + 0.3 * rng.standard_normal((n_ids * per_id, dim))
    return x[rng.permutation(len(x))].astype(np.float32)


def test_knn_search_auto_is_exact_below_the_switch_and_unknown_search_fails():
    x = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
    np.testing.assert_array_equal(knn(x, 5, search="auto")[0], knn(x, 5, search="exact")[0])
    assert resolve_search("auto", 10) == "exact" and resolve_search("exact", 10**7) == "exact"
    with pytest.raises(ClusteringError, match="cluster.knn"):
        knn(x, 5, search="annoy")  # type: ignore[arg-type]


def test_knn_search_faiss_without_faiss_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(knn_module, "_faiss_available", lambda: False)
    assert resolve_search("auto", 10**6) == "exact"  # auto falls back to exact
    with pytest.raises(ClusteringError, match=r"pip install 'unreid\[faiss\]'"):
        knn(np.ones((4, 2)), 2, search="faiss")


def test_knn_faiss_search_follows_the_conventions_and_finds_planted_neighbours():
    pytest.importorskip("faiss")
    x = _planted(12, 10, 48, seed=3)
    ids, sims = knn(x, 10, search="faiss")
    ref_ids, ref_sims = knn(x, 10, search="exact")
    assert ids.shape == (120, 10) and ids.dtype == np.int64 and sims.dtype == np.float32
    assert (ids[:, 0] == np.arange(120)).all()
    assert (np.diff(sims[:, 1:], axis=1) <= 1e-6).all()  # decreasing after self
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(ref_ids, axis=1))
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)


def test_jaccard_dbscan_labels_from_faiss_search_equal_exact_on_planted_data():
    pytest.importorskip("faiss")
    x = _planted(15, 12, 300, seed=4)  # more dims than the PCA keeps
    exact = dbscan(jaccard_distance(x, 20, 6, cutoff=0.6, search="exact"), 0.6, 4)
    approx = dbscan(jaccard_distance(x, 20, 6, cutoff=0.6, search="faiss"), 0.6, 4)
    np.testing.assert_array_equal(approx, exact)
    assert exact.max() + 1 == 15  # the planted identities, found


def test_config_cluster_knn_is_validated():
    assert {v for v in [*SEARCHES, "x"] if RULES["cluster.knn"].check(v)} == set(SEARCHES)
    assert load_config([], ["cluster.knn=faiss"]).cluster.knn == "faiss"
    assert load_config([], []).cluster.knn == "auto"
    with pytest.raises(ConfigError, match="cluster.knn='annoy' is not allowed"):
        load_config([], ["cluster.knn=annoy"])
