"""DBSCAN on a sparse distance graph (scikit-learn, ``metric="precomputed"``).

Sparse semantics, which differ from a dense matrix: a *stored* entry is a
distance, including a stored 0.0 (a duplicate sample, or the sample itself),
and a *missing* entry means "not a neighbour at any eps". scipy drops explicit
zeros in some operations (``A + B``, ``A.multiply(B)``, ``A.eliminate_zeros()``,
building from a dense array), which would silently turn duplicates into
strangers. :func:`unreid.cluster.jaccard_distance` therefore builds its matrix
from raw CSR arrays and stores every 0 explicitly, and :func:`dbscan` sets the
diagonal itself, so no value ever needs shifting away from 0. If you build a
graph by other means, keep zero distances stored (or shift them to a tiny
positive value below any eps you use before an operation that drops zeros).

With ``jaccard_distance(features, cutoff=eps)`` the neighbourhoods are exactly
those of the dense matrix (every pair at distance <= eps is stored), so the
labels equal scikit-learn DBSCAN on the dense Jaccard matrix up to renumbering.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import DBSCAN

from unreid.errors import ClusteringError

__all__ = ["dbscan"]


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Clusters numbered 0, 1, ... in order of their lowest sample index; -1 kept."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    member = np.flatnonzero(labels >= 0)
    if len(member):
        _, first, inverse = np.unique(labels[member], return_index=True, return_inverse=True)
        # Rank the clusters by the position of their lowest sample index.
        new_id = np.empty(len(first), dtype=np.int64)
        new_id[np.argsort(first)] = np.arange(len(first))
        out[member] = new_id[inverse]
    return out


def _prepare(graph: sparse.spmatrix | sparse.sparray) -> sparse.csr_matrix:
    """CSR copy with an explicit 0.0 diagonal and every row sorted by distance.

    Sorting here (vectorised) spares scikit-learn its per-row Python loop; the
    diagonal is written here rather than by scikit-learn's ``setdiag`` because
    inserting missing diagonal entries reorders the rows again.
    """
    coo = sparse.coo_matrix(graph)
    n = coo.shape[0]
    off = coo.row != coo.col
    rows = np.concatenate([coo.row[off], np.arange(n)]).astype(np.int64)
    cols = np.concatenate([coo.col[off], np.arange(n)]).astype(np.int64)
    data = np.concatenate([coo.data[off].astype(np.float64), np.zeros(n)])
    order = np.lexsort((cols, data, rows))
    ptr = np.searchsorted(rows[order], np.arange(n + 1))
    return sparse.csr_matrix((data[order], cols[order], ptr), shape=(n, n))


def _symmetric_dbscan(
    graph: sparse.spmatrix | sparse.sparray, eps: float, min_samples: int
) -> np.ndarray | None:
    """scikit-learn's DBSCAN labels (before renumbering: any ids) from array operations,
    or None when the within-eps relation of ``graph`` is not symmetric.

    On a symmetric relation scikit-learn's expansion gives: core samples (``min_samples``
    stored entries within eps, the sample itself included) labelled by the connected
    components of the core-core edges; every other sample with a core neighbour joins
    the cluster expanded first, i.e. the one whose lowest core index is smallest (the
    expansion starts from cores in index order and never revisits a labelled sample).
    Its per-row Python lists cost more than the clustering itself at N = 10,000s.
    """
    coo = sparse.coo_matrix(graph)
    n = coo.shape[0]
    near = (coo.data <= eps) & (coo.row != coo.col)
    r, c = coo.row[near].astype(np.int64), coo.col[near].astype(np.int64)
    if not np.array_equal(np.sort(r * n + c), np.sort(c * n + r)):
        return None
    core = np.bincount(r, minlength=n) + 1 >= min_samples
    both = core[r] & core[c]
    edges = sparse.csr_matrix(
        (np.ones(int(both.sum()), dtype=np.int8), (r[both], c[both])), shape=(n, n)
    )
    _, comp = connected_components(edges, directed=False)
    core_idx = np.flatnonzero(core)
    # Each component's lowest core index: the order in which scikit-learn expands them.
    first = np.full(n, n, dtype=np.int64)
    np.minimum.at(first, comp[core_idx], core_idx)
    labels = np.full(n, -1, dtype=np.int64)
    labels[core_idx] = comp[core_idx]
    # Border samples: non-core with a core neighbour; the earliest expanded cluster wins.
    border = ~core[r] & core[c]
    br, bc = r[border], comp[c[border]]
    if len(br):
        order = np.lexsort((first[bc], br))
        br, bc = br[order], bc[order]
        lead = np.concatenate([[True], br[1:] != br[:-1]])
        labels[br[lead]] = bc[lead]
    return labels


def dbscan(
    sparse_dist: sparse.spmatrix | sparse.sparray | np.ndarray,
    eps: float,
    min_samples: int = 4,
) -> np.ndarray:
    """DBSCAN cluster labels from a precomputed (sparse) distance graph.

    Args:
        sparse_dist: (N, N) distances: a scipy sparse matrix (a stored entry, even
            0.0, is a distance; a missing one is "not a neighbour"), typically
            ``jaccard_distance(features, cutoff=eps)``, or a dense array (every
            entry a distance). The diagonal is ignored: a sample is always its
            own neighbour at distance 0.
        eps: neighbourhood radius: samples at distance ``<= eps`` are neighbours
            (scikit-learn's convention). Must be > 0.
        min_samples: neighbours (self included) that make a core sample.

    Returns:
        (N,) int64 labels, clusters numbered 0, 1, ... by their lowest sample
        index, ``-1`` for outliers. When every sample is an outlier (including
        any N < min_samples, where no sample can be core) the result is all -1
        and a ``UserWarning`` says which knob to turn (``cluster.eps`` /
        ``cluster.min_samples``). N = 0 gives an empty array.

    Raises:
        ClusteringError: non-square input, negative or NaN distances, eps <= 0,
            min_samples < 1.
    """
    is_number = isinstance(eps, (int, float, np.floating, np.integer))
    if not (is_number and np.isfinite(eps) and eps > 0):
        raise ClusteringError(f"dbscan: eps={eps} must be a positive number; set cluster.eps > 0")
    if int(min_samples) != min_samples or min_samples < 1:
        raise ClusteringError(
            f"dbscan: min_samples={min_samples} must be a positive integer; set "
            "cluster.min_samples >= 1"
        )
    is_sparse = sparse.issparse(sparse_dist)
    shape = sparse_dist.shape
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ClusteringError(f"dbscan: the distance matrix must be square (N, N), got {shape}")
    n = shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    values = np.asarray(sparse_dist.data if is_sparse else sparse_dist)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0):
        raise ClusteringError(
            "dbscan: distances must be finite and >= 0; the distance matrix contains "
            "negative, NaN or inf entries"
        )
    labels = _symmetric_dbscan(sparse_dist, float(eps), int(min_samples)) if is_sparse else None
    if labels is None:
        if is_sparse:
            graph = _prepare(sparse_dist)
        else:
            graph = np.array(values, dtype=np.float64)
            np.fill_diagonal(graph, 0.0)
        labels = DBSCAN(
            eps=float(eps), min_samples=int(min_samples), metric="precomputed"
        ).fit(graph).labels_
    labels = _renumber(labels)
    if (labels < 0).all():
        reason = (
            f"N={n} < min_samples={min_samples}, so no sample can be a core sample"
            if n < min_samples
            else f"no sample has {min_samples} neighbours within eps={eps}"
        )
        warnings.warn(
            f"dbscan: all {n} samples are outliers ({reason}); raise cluster.eps or lower "
            "cluster.min_samples",
            UserWarning,
            stacklevel=2,
        )
    return labels
