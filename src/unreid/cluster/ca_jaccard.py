"""Camera-aware Jaccard distance (CA-Jaccard; Chen et al., CVPR 2024), sparse.

The k-reciprocal neighbours of the plain Jaccard distance come from one global
ranking, where a person's images from the same camera crowd out those from the
other cameras: the encoding then says "same camera" more than "same person".
CA-Jaccard builds the neighbour sets per camera relation instead:

1. Intra-camera ranking (the sample's own camera, itself first) and
   inter-camera ranking (every other camera). The k-reciprocal sets are taken
   in each: ``j`` is an intra neighbour of ``i`` when each is in the other's
   first ``k1_intra + 1`` intra-camera entries, an inter neighbour when each is
   in the other's first ``k1_inter + 1`` inter-camera entries (the official
   code's widths: ``rank[i, :k + 1]``). The set of ``i`` is their union; there is
   no 2/3 recall expansion (inter-camera neighbours are few and reliable, the
   expansion would bring the same-camera crowd back).
2. Weights ``softmax(-d)`` over the set, ``d = 2 - 2 cos`` (clipped at 0), as in
   :func:`unreid.cluster.jaccard_distance`.
3. Camera-aware local query expansion: row i becomes the mean of the rows of its
   ``k2_intra`` first intra-camera entries (itself included) and its ``k2_inter``
   first inter-camera entries.
4. The standard Jaccard distance of the rows, ``1 - s / (2 - s)``, computed by
   :mod:`unreid.cluster.jaccard`'s sparse pass; the same sparse output.

Defaults are the official code's (``k1_intra`` 5, ``k1_inter`` 20, ``k2_intra`` 2,
``k2_inter`` 4). The official code also uses ``k2`` 3/3 in the first epoch only
("warm-up"); that schedule is the caller's (see :mod:`unreid.methods.cap`).

Small cameras: a camera with fewer samples than a width uses all it has (the
intra widths by its size, the inter widths by the size of the other cameras).
With one camera there are no inter-camera neighbours and the result is a Jaccard
distance over intra-camera (= global) reciprocal sets without expansion.

Ranking follows :func:`unreid.cluster.knn`: cosine similarity, the sample itself
first in its intra list, ties by increasing index.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from unreid.errors import ClusteringError

from .jaccard import _contains, _jaccard_matrix, _pair_cosines, _row_ptr
from .knn import _fix_boundary_ties, _order_rows, as_features, default_chunk, neighbours

__all__ = ["ca_jaccard_distance", "camera_rankings"]


def _ranked(
    x: torch.Tensor, inv_norm: torch.Tensor, query: np.ndarray, gallery: np.ndarray, k: int
) -> np.ndarray:
    """(len(query), k) global ids of each query's top-k gallery samples by cosine
    (ties by increasing index); ``query`` and ``gallery`` are disjoint sorted ids."""
    out = np.empty((len(query), k), dtype=np.int64)
    g = torch.from_numpy(gallery).to(x.device)
    gx = x[g]
    g_inv = inv_norm[g]
    step = default_chunk(len(gallery))
    for s in range(0, len(query), step):
        q = torch.from_numpy(query[s : s + step]).to(x.device)
        block = (x[q] @ gx.T) * inv_norm[q][:, None] * g_inv[None, :]
        vals, ids = torch.topk(block, k, dim=1)
        _fix_boundary_ties(block, vals, ids, k)
        _, ids = _order_rows(vals, ids)
        out[s : s + step] = gallery[ids.cpu().numpy()]
    return out


def camera_rankings(
    x: torch.Tensor, inv_norm: torch.Tensor, camids: np.ndarray, intra: int, inter: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per sample, its first ``intra`` intra-camera and ``inter`` inter-camera neighbours.

    Args:
        x, inv_norm: validated features and inverse norms (:func:`knn.as_features`).
        camids: (N,) int camera of each sample.
        intra, inter: list lengths wanted (capped by what each camera relation has).

    Returns:
        ``(intra_lists, inter_lists)``: for sample i, ``intra_lists[i]`` (i itself
        first, then its camera's samples by decreasing cosine) and ``inter_lists[i]``
        (other cameras' samples by decreasing cosine), int64 global ids.
    """
    n = x.shape[0]
    intra_lists: list[np.ndarray] = [np.empty(0, np.int64)] * n
    inter_lists: list[np.ndarray] = [np.empty(0, np.int64)] * n
    for c in np.unique(camids):
        own = np.flatnonzero(camids == c)
        others = np.flatnonzero(camids != c)
        w = min(intra, len(own))
        sel = torch.from_numpy(own).to(x.device)
        local, _ = neighbours(x[sel], inv_norm[sel], w, backend="torch")
        ranked = own[local]
        for row, i in enumerate(own):
            intra_lists[i] = ranked[row]
        w = min(inter, len(others))
        if w:
            ranked = _ranked(x, inv_norm, own, others, w)
            for row, i in enumerate(own):
                inter_lists[i] = ranked[row]
    return intra_lists, inter_lists


def _lists_to_pairs(lists: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the first ``width`` entries of every list."""
    lens = np.array([min(width, len(a)) for a in lists], dtype=np.int64)
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), lens)
    cols = np.concatenate([a[:w] for a, w in zip(lists, lens, strict=True)]) if len(lists) else (
        np.empty(0, np.int64))
    return rows, cols.astype(np.int64)


def _reciprocal_keys(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """Sorted keys ``i * n + j`` of the pairs whose reverse ``(j, i)`` is also given."""
    forward = rows * n + cols
    keys = np.sort(forward)
    return np.sort(forward[_contains(keys, cols * n + rows)])


def ca_jaccard_distance(
    features: np.ndarray | torch.Tensor,
    camids: np.ndarray,
    *,
    k1_intra: int = 5,
    k1_inter: int = 20,
    k2_intra: int = 2,
    k2_inter: int = 4,
    cutoff: float | None = None,
) -> sparse.csr_matrix:
    """Sparse camera-aware Jaccard distance (module doc), the output of ``jaccard_distance``.

    Args:
        features: (N, D) float array or tensor (L2-normalised inside).
        camids: (N,) int camera of each sample.
        k1_intra, k1_inter: reciprocal widths ``k + 1`` in the intra-/inter-camera lists.
        k2_intra, k2_inter: rows averaged by the camera-aware query expansion (intra
            count includes the sample itself; ``k2_intra >= 1``, ``k2_inter >= 0``).
        cutoff: keep only pairs at distance ``<= cutoff`` (the DBSCAN eps), in (0, 1].

    Returns:
        (N, N) ``scipy.sparse.csr_matrix``, float64, canonical, symmetric, explicit 0.0
        on the diagonal; missing entries mean distance 1 (or farther than ``cutoff``).

    Raises:
        ClusteringError: bad features, camids of the wrong length, k's out of range,
            cutoff outside (0, 1].
    """
    x, inv_norm = as_features(features, who="ca_jaccard_distance")
    n = x.shape[0]
    cams = np.asarray(camids).reshape(-1)
    if len(cams) != n or not (np.issubdtype(cams.dtype, np.integer) or n == 0):
        raise ClusteringError(
            f"ca_jaccard_distance: camids must be {n} integers (one per feature row), got "
            f"shape {cams.shape} dtype {cams.dtype}"
        )
    for name, value, low in (("k1_intra", k1_intra, 0), ("k1_inter", k1_inter, 0),
                             ("k2_intra", k2_intra, 1), ("k2_inter", k2_inter, 0)):
        if int(value) != value or value < low:
            raise ClusteringError(
                f"ca_jaccard_distance: {name}={value} must be an integer >= {low} "
                f"(camera.{name})"
            )
    if cutoff is not None and not 0.0 < float(cutoff) <= 1.0:
        raise ClusteringError(
            f"ca_jaccard_distance: cutoff={cutoff} must lie in (0, 1]; set cluster.eps below 1"
        )
    cams = cams.astype(np.int64)
    w_intra, w_inter = int(k1_intra) + 1, int(k1_inter) + 1
    intra, inter = camera_rankings(
        x, inv_norm, cams, max(w_intra, int(k2_intra)), max(w_inter, int(k2_inter))
    )
    # Step 1: reciprocal pairs in each relation, united (the intra sets hold (i, i)).
    r_keys = np.union1d(
        _reciprocal_keys(*_lists_to_pairs(intra, w_intra), n),
        _reciprocal_keys(*_lists_to_pairs(inter, w_inter), n),
    )
    # Step 2: softmax(-d) over each row's set.
    rows, cols = r_keys // n, r_keys % n
    cos = _pair_cosines(x, inv_norm, rows, cols)
    ptr = _row_ptr(r_keys, n)
    dist = np.maximum(2.0 - 2.0 * cos, 0.0)
    weight = np.exp(np.minimum.reduceat(dist, ptr[:-1])[rows] - dist)
    weight /= np.add.reduceat(weight, ptr[:-1])[rows]
    v = sparse.csr_matrix((weight, cols, ptr), shape=(n, n))
    # Step 3: mean of V over the k2_intra intra and k2_inter inter first entries.
    q_rows_a, q_cols_a = _lists_to_pairs(intra, int(k2_intra))
    q_rows_b, q_cols_b = _lists_to_pairs(inter, int(k2_inter))
    q_rows = np.concatenate([q_rows_a, q_rows_b])
    q_cols = np.concatenate([q_cols_a, q_cols_b])
    count = np.bincount(q_rows, minlength=n).astype(np.float64)
    mean = sparse.csr_matrix((1.0 / count[q_rows], (q_rows, q_cols)), shape=(n, n))
    v = mean @ v
    v.sort_indices()
    # Step 4: the plain Jaccard pass, then the upper triangle mirrored.
    return _jaccard_matrix(v, n, cutoff)
