"""Sparse k-reciprocal Jaccard distance and re-ranking against the dense textbook versions
in jaccard_reference.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jaccard_reference import clustered, dense_jaccard, dense_rerank, unit
from scipy import sparse

from unreid.cluster import jaccard_distance, rerank
from unreid.errors import ClusteringError


def _dense(d: sparse.csr_matrix) -> np.ndarray:
    """Missing entries of the sparse Jaccard matrix are distance 1."""
    out = np.ones(d.shape)
    coo = d.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


# ---------------------------------------------------------------- hand-made case


def _two_pairs(theta: float, phi: float) -> np.ndarray:
    return np.array([
        [1, 0, 0, 0],
        [np.cos(theta), np.sin(theta), 0, 0],
        [0, 0, 1, 0],
        [0, 0, np.cos(phi), np.sin(phi)],
    ])


def test_jaccard_two_pairs_closed_form():
    # k1=2: R(i) = {i, partner}; V row = softmax(-[0, d]) over (self, partner), d = 2 - 2 cos;
    # sum(min) = 2 e^-d / (1 + e^-d), so the Jaccard distance is 1 - exp(-d).
    d = jaccard_distance(_two_pairs(np.pi / 3, np.pi / 2), k1=2, k2=1)
    assert d.nnz == 8  # four diagonal zeros + both pairs, nothing across the pairs
    assert d[0, 1] == pytest.approx(1 - np.exp(-1.0), abs=1e-12)  # cos 60 deg = 0.5
    assert d[2, 3] == pytest.approx(1 - np.exp(-2.0), abs=1e-12)  # cos 90 deg = 0
    assert d[0, 0] == 0.0 and d[1, 0] == pytest.approx(d[0, 1], abs=1e-15)


def test_jaccard_query_expansion_makes_pairs_identical_and_keeps_zeros_stored():
    # k2=2 averages each row with its partner's: both rows become (1/2, 1/2), distance 0.
    d = jaccard_distance(_two_pairs(np.pi / 3, np.pi / 2), k1=2, k2=2, cutoff=0.5)
    assert d.nnz == 8
    np.testing.assert_allclose(d.data, 0.0, atol=1e-15)
    assert (d.data == 0).sum() >= 4  # the diagonal: explicit zeros, stored
    coo = d.tocoo()
    assert {(int(r), int(c)) for r, c in zip(coo.row, coo.col, strict=True)} == {
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)
    }


# ---------------------------------------------------------------- dense references


@pytest.mark.parametrize(
    "name, feats, k1, k2",
    [
        ("random", np.random.default_rng(0).standard_normal((300, 24)), 20, 6),
        ("clustered", clustered(40, 8, 32, 0.6, seed=1), 30, 6),
        ("odd k1, no expansion", np.random.default_rng(2).standard_normal((150, 8)), 25, 1),
    ],
)
def test_jaccard_equals_dense_reference(name, feats, k1, k2):
    ref = dense_jaccard(feats, k1, k2)
    d = jaccard_distance(feats, k1=k1, k2=k2)
    assert isinstance(d, sparse.csr_matrix) and d.has_canonical_format
    np.testing.assert_allclose(_dense(d), ref, atol=1e-6, rtol=0)
    # Stored = exactly the pairs sharing support (distance < 1) plus the diagonal.
    assert d.nnz == int((ref < 1 - 1e-12).sum())
    np.testing.assert_array_equal(d.diagonal(), 0.0)

    cut = jaccard_distance(feats, k1=k1, k2=k2, cutoff=0.6)
    coo = cut.tocoo()
    assert set(zip(coo.row.tolist(), coo.col.tolist(), strict=True)) == set(
        zip(*np.nonzero(ref <= 0.6), strict=True)
    )
    np.testing.assert_allclose(coo.data, ref[coo.row, coo.col], atol=1e-6, rtol=0)


def test_jaccard_duplicates_follow_the_tie_rule():
    # Signed permutations of one integer vector, some duplicated: equal norms and integer
    # dot products, so tied cosines are exactly equal and only the tie rule orders them.
    rng = np.random.default_rng(3)
    base = np.array([3.0, 2.0, 1.0, 0, 0, 0, 0, 0])
    uniq = np.stack([rng.permutation(base) * rng.choice([-1.0, 1.0], 8) for _ in range(40)])
    feats = np.concatenate([uniq, uniq[:15], uniq[:5]])
    dots = feats @ feats.T
    np.fill_diagonal(dots, np.inf)
    rank = np.argsort(-dots, axis=1, kind="stable")
    ref = dense_jaccard(feats, 10, 3, rank=rank)
    d = jaccard_distance(feats, k1=10, k2=3, cutoff=1.0)
    np.testing.assert_allclose(_dense(d), ref, atol=1e-6, rtol=0)
    # A sample and its duplicate are (nearly) at distance 0, and stored.
    assert d[0, 40] <= 1e-12 and (0, 40) in set(zip(*d.tocoo().coords, strict=True))


def test_jaccard_float32_input_matches_float64_reference():
    feats = clustered(30, 10, 64, 0.5, seed=4).astype(np.float32)
    d = jaccard_distance(torch.from_numpy(feats), k1=20, k2=6)
    np.testing.assert_allclose(_dense(d), dense_jaccard(feats, 20, 6), atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(8, 40),
    k1=st.integers(1, 12),
    k2=st.integers(1, 12),
    dim=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_jaccard_property_matches_reference_small(n, k1, k2, dim, seed):
    k1 = min(k1, n)
    k2 = min(k2, k1)
    feats = np.random.default_rng(seed).standard_normal((n, dim))
    d = jaccard_distance(feats, k1=k1, k2=k2)
    dense = _dense(d)
    np.testing.assert_allclose(dense, dense_jaccard(feats, k1, k2), atol=1e-6, rtol=0)
    assert dense.min() >= 0 and dense.max() <= 1
    np.testing.assert_allclose(dense, dense.T, atol=1e-12)


def test_jaccard_rejects_bad_input():
    x = np.random.default_rng(5).standard_normal((20, 4))
    with pytest.raises(ClusteringError, match="cluster.k1"):
        jaccard_distance(x, k1=21)
    with pytest.raises(ClusteringError, match="cluster.k2"):
        jaccard_distance(x, k1=5, k2=6)
    with pytest.raises(ClusteringError, match="cutoff"):
        jaccard_distance(x, k1=5, k2=2, cutoff=1.5)
    with pytest.raises(ClusteringError, match="cutoff"):
        jaccard_distance(x, k1=5, k2=2, cutoff=0.0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ClusteringError, match=r"NaN/inf \(first rows \[3\]\)"):
        jaccard_distance(bad, k1=5, k2=2)
    with pytest.raises(ClusteringError, match="non-empty"):
        jaccard_distance(np.zeros((0, 4)), k1=5, k2=2)


# ---------------------------------------------------------------- re-ranking


@pytest.mark.parametrize(
    "feats, num_q, k1, k2, lam",
    [
        (np.random.default_rng(6).standard_normal((260, 16)), 60, 20, 6, 0.3),
        (clustered(25, 10, 32, 0.7, seed=7), 50, 20, 6, 0.3),
        (np.random.default_rng(8).standard_normal((90, 8)), 20, 9, 1, 0.5),
    ],
)
def test_rerank_equals_dense_textbook(feats, num_q, k1, k2, lam):
    q, g = feats[:num_q], feats[num_q:]
    got = rerank(q, g, k1=k1, k2=k2, lambda_=lam)
    assert got.shape == (num_q, len(g)) and got.dtype == np.float32
    np.testing.assert_allclose(got, dense_rerank(q, g, k1, k2, lam), atol=1e-6, rtol=0)


def test_rerank_lambda_one_is_the_row_normalised_distance():
    rng = np.random.default_rng(9)
    q, g = rng.standard_normal((12, 5)), rng.standard_normal((30, 5))
    x = unit(np.concatenate([q, g]))
    d = np.maximum(2 - 2 * x @ x.T, 0)
    expected = (d / d.max(axis=1, keepdims=True))[:12, 12:]
    np.testing.assert_allclose(rerank(q, g, k1=6, k2=2, lambda_=1.0), expected, atol=1e-6)


def test_rerank_rejects_bad_input():
    rng = np.random.default_rng(10)
    q, g = rng.standard_normal((5, 4)), rng.standard_normal((10, 4))
    with pytest.raises(ClusteringError, match="feature dimension"):
        rerank(q, rng.standard_normal((10, 3)))
    with pytest.raises(ClusteringError, match="only 15 samples"):
        rerank(q, g, k1=20)
    with pytest.raises(ClusteringError, match="lambda_"):
        rerank(q, g, k1=4, lambda_=1.5)


def test_jaccard_many_small_chunks_on_threads_equal_one_chunk(monkeypatch):
    # Tiny budgets: hundreds of row chunks, narrow blocks, sparse products and cosine
    # gathers cut into blocks, run on two threads; the stored pairs and distances must not
    # depend on how the rows were cut.
    import unreid.cluster.jaccard as jaccard_module

    feats = clustered(25, 8, 16, 0.5, seed=6)
    whole = jaccard_distance(feats, k1=15, k2=4, cutoff=0.8)
    monkeypatch.setattr(jaccard_module, "_TRIPLE_BUDGET", 40)
    monkeypatch.setattr(jaccard_module, "_BLOCK_BUDGET", 64)
    monkeypatch.setattr(jaccard_module, "_PRODUCT_SPLIT_ROWS", 8)
    monkeypatch.setattr(jaccard_module, "_GATHER_BUDGET", 64)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cut = jaccard_distance(feats, k1=15, k2=4, cutoff=0.8)
    assert (cut.indptr == whole.indptr).all() and (cut.indices == whole.indices).all()
    np.testing.assert_allclose(cut.data, whole.data, atol=1e-12, rtol=0)
    np.testing.assert_allclose(_dense(cut), np.where(
        dense_jaccard(feats, 15, 4) <= 0.8, dense_jaccard(feats, 15, 4), 1.0), atol=1e-6)
    # The re-ranking's rectangle goes through the same chunks.
    ref = rerank(feats[:30], feats[30:], k1=10, k2=4)
    monkeypatch.undo()
    np.testing.assert_allclose(ref, rerank(feats[:30], feats[30:], k1=10, k2=4), atol=1e-6)


# ---------------------------------------------------------------- shared kNN lists


def _same_csr(a: sparse.csr_matrix, b: sparse.csr_matrix) -> bool:
    """Bit for bit: the same pattern and the same float64 values."""
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices)
            and a.data.tobytes() == b.data.tobytes())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("k1", "k2", "depth", "cutoff"),
                         [(5, 2, 5, None), (10, 2, 41, 0.7), (15, 3, 30, 0.5),
                          (20, 4, 20, None), (30, 6, 41, 0.7), (7, 7, 12, 1.0)])
def test_jaccard_on_shared_lists_is_identical_to_its_own_search(dtype, k1, k2, depth, cutoff):
    from unreid.cluster.knn import as_features, neighbours

    feats = clustered(30, 8, 24, 0.8, seed=11).astype(dtype)
    own = jaccard_distance(feats, k1=k1, k2=k2, cutoff=cutoff)
    # the lists the graph's own search makes, deeper than it needs
    lists = neighbours(*as_features(feats, who="test"), depth)
    shared = jaccard_distance(feats, k1=k1, k2=k2, cutoff=cutoff, neighbours=lists)
    assert shared.nnz > feats.shape[0] and _same_csr(shared, own)


def test_jaccard_on_deeper_lists_with_ties_is_identical_to_its_own_search():
    # Exact duplicates: tied similarities straddle the k1-th place. float64 features are
    # searched by the torch pass, which picks among those ties by index as the cut of a
    # deeper list does (faiss's flat index, used for float32 when installed, picks its own
    # way there).
    from unreid.cluster.knn import as_features, neighbours

    uniq = np.random.default_rng(12).standard_normal((60, 16))
    feats = np.concatenate([uniq, uniq[:20], uniq[:20], uniq[:5]])
    lists = neighbours(*as_features(feats, who="test"), 25)
    assert (lists[1][:, 9] == lists[1][:, 10]).sum() > 10  # ties at the boundary
    own = jaccard_distance(feats, k1=10, k2=3, cutoff=0.8)
    shared = jaccard_distance(feats, k1=10, k2=3, cutoff=0.8, neighbours=lists)
    assert _same_csr(shared, own)


def test_jaccard_rejects_lists_that_do_not_fit():
    from unreid.cluster import knn

    x = np.random.default_rng(13).standard_normal((30, 6)).astype(np.float32)
    ids, sims = knn(x, 8)
    with pytest.raises(ClusteringError, match="hold 8 neighbours per sample but 10 are needed"):
        jaccard_distance(x, k1=10, k2=2, neighbours=(ids, sims))
    with pytest.raises(ClusteringError, match=r"shape \(20, K\)"):
        jaccard_distance(x[:20], k1=5, k2=2, neighbours=(ids, sims))
    with pytest.raises(ClusteringError, match="each sample first"):
        jaccard_distance(x, k1=5, k2=2, neighbours=(ids[::-1], sims))
    with pytest.raises(ClusteringError, match=r"shape \(30, K\)"):
        jaccard_distance(x, k1=5, k2=2, neighbours=(ids, sims[:, :4]))
