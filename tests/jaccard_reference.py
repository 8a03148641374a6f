"""Dense textbook versions of the k-reciprocal Jaccard distance and re-ranking.

Straightforward O(N^2) re-writings of the originals (cluster-contrast's
``compute_jaccard_distance`` and Zhong et al.'s ``re_ranking``): full N x N encoding V,
per-row loops, inverted index by column. The sparse implementations in
``unreid.cluster`` are tested against them, and ``bench/cluster_bench.py`` uses
:func:`dense_jaccard` as its dense baseline.
"""

from __future__ import annotations

import numpy as np


def unit(features: np.ndarray, dtype=np.float64) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def reference_rank(x: np.ndarray) -> np.ndarray:
    """Full ranking by cosine similarity: self first, then decreasing similarity, ties by
    increasing index (the documented knn rule)."""
    sim = x @ x.T
    np.fill_diagonal(sim, np.inf)
    return np.argsort(-sim, axis=1, kind="stable")


def _reciprocal(rank: np.ndarray, i: int, width: int) -> np.ndarray:
    forward = rank[i, :width]
    backward = rank[forward, :width]
    return forward[np.where(backward == i)[0]]


def _encode(x, rank, width, half_width, k2, row_dist, dtype):
    """Dense V after query expansion; row_dist(i, idx) -> distances used by the kernel."""
    n = len(x)
    recip = [_reciprocal(rank, i, width) for i in range(n)]
    recip_half = [_reciprocal(rank, i, half_width) for i in range(n)]
    v = np.zeros((n, n), dtype=dtype)
    for i in range(n):
        expansion = recip[i]
        for candidate in recip[i]:
            cand = recip_half[candidate]
            if len(np.intersect1d(cand, recip[i])) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        weight = np.exp(-row_dist(i, expansion))
        v[i, expansion] = weight / weight.sum()
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
    return v


def _jaccard_rows(v: np.ndarray, rows: int) -> np.ndarray:
    """1 - sum(min) / (2 - sum(min)) for the first ``rows`` rows, via the inverted index."""
    n = v.shape[1]
    inv_index = [np.where(v[:, c] != 0)[0] for c in range(n)]
    out = np.zeros((rows, n), dtype=v.dtype)
    for i in range(rows):
        temp_min = np.zeros(n, dtype=v.dtype)
        for c in np.where(v[i] != 0)[0]:
            temp_min[inv_index[c]] += np.minimum(v[i, c], v[inv_index[c], c])
        out[i] = 1 - temp_min / (2 - temp_min)
    return out


def dense_jaccard(
    features: np.ndarray, k1: int = 30, k2: int = 6, *, rank: np.ndarray | None = None,
    dtype=np.float64,
) -> np.ndarray:
    """cluster-contrast's Jaccard distance, dense (N, N). ``rank``: precomputed kNN lists
    (N, >= k1) from any exact search; default: full argsort of the cosine matrix."""
    x = unit(features, dtype)
    rank = reference_rank(x) if rank is None else rank
    rank = rank[:, :k1]  # cluster-contrast searches k1 neighbours (self included)
    half = int(np.around(k1 / 2))

    def row_dist(i, idx):
        return 2 - 2 * (x[i] @ x[idx].T)

    v = _encode(x, rank, k1 + 1, half + 1, k2, row_dist, dtype)
    dist = _jaccard_rows(v, len(x))
    dist[dist < 0] = 0.0
    return dist


def dense_rerank(q: np.ndarray, g: np.ndarray, k1=20, k2=6, lambda_value=0.3) -> np.ndarray:
    """Zhong et al.'s ``re_ranking`` fed with Euclidean distances of normalised features."""
    x = unit(np.concatenate([q, g]))
    euclid = np.sqrt(np.maximum(2 - 2 * x @ x.T, 0))
    original = np.power(euclid, 2)
    original = np.transpose(original / np.max(original, axis=0))
    rank = np.argsort(original, axis=1, kind="stable")
    num_q = len(q)

    v = _encode(x, rank, k1 + 1, int(np.around(k1 / 2)) + 1, k2, lambda i, idx: original[i, idx],
                np.float64)
    jac = _jaccard_rows(v, num_q)
    final = jac * (1 - lambda_value) + original[:num_q] * lambda_value
    return final[:, num_q:]


def clustered(n_ids: int, per_id: int, dim: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    x = np.repeat(centres, per_id, axis=0) + noise * rng.standard_normal((n_ids * per_id, dim))
    return x[rng.permutation(len(x))]
