"""Exact cosine kNN: hand cases, brute force with ties, chunking, faiss agreement, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unreid.cluster import knn
from unreid.errors import ClusteringError


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
