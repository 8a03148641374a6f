"""k-reciprocal Jaccard distance (Zhong et al., CVPR 2017), sparse and exact.

Cluster-contrast (``compute_jaccard_distance``) and the test-time re-ranking
(``re_ranking``) build several dense N x N matrices. Here every object is
sparse and the answer is the same to float rounding (the tests compare against
dense textbook implementations to 1e-6):

1. Ranking: :func:`unreid.cluster.knn` conventions (self first, ties by index); or the
   first k1 columns of lists the caller searched once for several graphs.
2. k-reciprocal sets ``R(i, w) = {j in rank[i, :w] : i in rank[j, :w]}`` for all i
   at once: the kNN pattern times its transpose, elementwise (scipy sparse).
3. Expansion: for every candidate ``c in R(i, w1)``, ``R(c, w2)`` joins the set when
   more than 2/3 of it lies in ``R(i, w1)`` (same float comparison as the
   original). The overlaps of all (i, c) pairs are one sparse product
   ``R(w1) R(w2)^T`` read at R(w1)'s pattern, the expanded sets the pattern of
   ``R(w1) + J R(w2)`` (J: the joining pairs); scipy's compiled products, in row
   blocks on threads.
4. Weights ``exp(-d(i, j))`` normalised per row (a softmax, as cluster-contrast
   writes it), ``d = max(2 - 2 cos, 0) * scale_i``: ``scale = 1`` for clustering,
   ``1 / max_j d(i, j)`` for re-ranking (the original normalises each row of the
   squared distances by its maximum). Cosines of pairs outside the kNN lists are
   computed directly (a row gather and a dot product each).
5. Local query expansion: ``V <- Q V`` with ``Q`` the sparse mean over each
   sample's k2 nearest neighbours (self included): one scipy sparse product.
6. Jaccard: rows of ``V`` sum to one, so ``sum(max) = 2 - sum(min)`` and
   ``d_J(i, j) = 1 - s / (2 - s)`` with ``s = sum_c min(V_ic, V_jc)``. For a chunk
   of rows, every (i, c, j) with ``V_ic, V_jc > 0`` is gathered through the CSC
   column lists of V (the inverted index), ``np.minimum`` gives the terms and
   ``np.bincount`` sums them into a (chunk x window) block that is scanned once with
   ``flatnonzero``. The samples are first put in a band order (reverse
   Cuthill-McKee on the pattern of V), so the window of partner columns of a chunk
   is narrow instead of all N; chunks are small enough (2**18 triples) for their
   temporaries to stay in cache and run on ``torch.get_num_threads()`` threads
   (numpy releases the GIL in these ops). Total work is O(sum_c nnz_c^2) with tiny
   constants, next to the O(N^2 D) kNN GEMM.

Pairs that share no column of V have ``s = 0``, i.e. distance exactly 1, and are
never stored: with ``cutoff`` (the DBSCAN eps) only pairs at distance
``<= cutoff`` are kept, so memory stays O(N * neighbours).

Parameter widths, as in the two originals: cluster-contrast searches only ``k1``
neighbours (self included), so its main reciprocal set uses ``rank[:, :k1]``;
the re-ranking code uses ``rank[:, :k1 + 1]``. Both use
``rank[:, :round(k1 / 2) + 1]`` for the candidates' sets (numpy rounding, half to
even) and ``rank[:, :k2]`` for the query expansion.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.csgraph import reverse_cuthill_mckee

from unreid.errors import ClusteringError

from .knn import Search, as_features, scan
from .knn import neighbours as search_neighbours

__all__ = ["jaccard_distance", "rerank"]

# Bounds on one chunk of the Jaccard accumulation: (i, c, j) triples (~50 bytes each in
# temporaries: small enough to stay in cache) and entries of the (rows x window) float64
# sum block.
_TRIPLE_BUDGET = 1 << 18
_BLOCK_BUDGET = 1 << 22
# Feature elements gathered at once when computing cosines of pairs outside the kNN lists.
_GATHER_BUDGET = 1 << 20
# Sparse products with at least this many rows are split into row blocks over threads.
_PRODUCT_SPLIT_ROWS = 1024


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``keys`` occur in the sorted array ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _row_ptr(sorted_keys: np.ndarray, n: int) -> np.ndarray:
    """CSR row pointer of sorted pair keys ``i * n + j``."""
    return np.searchsorted(sorted_keys, np.arange(n + 1, dtype=np.int64) * n)


def _product(a: sparse.csr_matrix, b: sparse.csr_matrix) -> sparse.csr_matrix:
    """``a @ b`` (CSR, indices not sorted), row blocks of ``a`` on ``torch.get_num_threads()``
    threads: scipy's compiled product releases the GIL, and each output row is computed
    exactly as in one product."""
    threads = max(1, torch.get_num_threads())
    if threads == 1 or a.shape[0] < _PRODUCT_SPLIT_ROWS:
        return (a @ b).tocsr()
    edges = np.linspace(0, a.shape[0], threads + 1).astype(np.int64)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        parts = list(pool.map(
            lambda se: (a[int(se[0]) : int(se[1])] @ b).tocsr(), zip(edges[:-1], edges[1:])
        ))
    return sparse.vstack(parts, format="csr")


def _reciprocal(rank: np.ndarray, width: int) -> sparse.csr_matrix:
    """The k-reciprocal pairs as a canonical (N, N) CSR pattern (all values 1.0):
    ``j in rank[i, :width]`` and ``i in rank[j, :width]``. Includes (i, i) since every
    rank row starts with i. The elementwise product with the transpose runs in scipy's
    compiled sparse kernels."""
    n = rank.shape[0]
    forward = sparse.csr_matrix(
        (np.ones(n * width), rank[:, :width].reshape(-1), np.arange(0, n * width + 1, width)),
        shape=(n, n),
    )
    forward.sort_indices()
    both = forward.multiply(forward.T.tocsr()).tocsr()
    both.sort_indices()
    return both


def _pair_cosines(
    x: torch.Tensor, inv_norm: torch.Tensor, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Cosine similarity of the sample pairs (a[t], b[t]), float64, chunked gathers on
    ``torch.get_num_threads()`` threads.

    numpy on the CPU: a row gather and a fused dot per pair cost several times less
    than the same torch indexing ops here, and both release the GIL (features on a GPU
    are copied once).
    """
    feats, scale = x.cpu().numpy(), inv_norm.cpu().numpy()
    out = np.empty(len(a), dtype=np.float64)
    step = max(1, _GATHER_BUDGET // x.shape[1])

    def chunk(s: int) -> None:
        ia, ib = a[s : s + step], b[s : s + step]
        out[s : s + step] = np.einsum("ij,ij->i", feats[ia], feats[ib]) * scale[ia] * scale[ib]

    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        list(pool.map(chunk, range(0, len(a), step)))
    return out


def _encode(
    x: torch.Tensor,
    inv_norm: torch.Tensor,
    rank: np.ndarray,
    sims: np.ndarray,
    *,
    width: int,
    half_width: int,
    k2: int,
    scale: np.ndarray,
) -> sparse.csr_matrix:
    """The k-reciprocal encoding ``V`` after local query expansion: (N, N) CSR, float64,
    canonical (sorted indices), every row summing to one (steps 2-5 of the module doc).

    ``rank``/``sims``: (N, K) kNN lists with ``K >= max(width, half_width, k2)``;
    ``scale``: (N,) factor applied to row i's distances before the kernel.
    """
    n = rank.shape[0]
    recip = _reciprocal(rank, width)
    half = _reciprocal(rank, half_width)
    # Step 3: for every pair (i, c) of R, |R2(c) & R(i)| = (R @ R2^T)[i, c], read at R's
    # own pattern (never 0 there: c lies in both R(i) and R2(c)). Sparse products in
    # compiled code, instead of listing every (i, c, member) triple in numpy.
    shared = recip.multiply(_product(recip, half.T.tocsr())).tocsr()
    shared.sort_indices()
    pair_c = shared.indices
    h_len = np.diff(half.indptr)[pair_c]
    # Float comparison exactly as the original: len(intersection) > 2/3 * len(R2(c)).
    joins = sparse.csr_matrix(
        ((shared.data > (2.0 / 3.0) * h_len).astype(np.float64), pair_c, shared.indptr),
        shape=(n, n),
    )
    joins.eliminate_zeros()
    # The expanded sets: R(i) and, for every joining c, R2(c) (all values positive, so
    # the sum's pattern is exactly their union).
    expanded = (recip + _product(joins, half)).tocsr()
    expanded.sort_indices()
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(expanded.indptr))
    cols, ptr = expanded.indices.astype(np.int64), expanded.indptr
    e_keys = rows * n + cols  # sorted
    del recip, half, shared, joins, pair_c, h_len, expanded

    # Step 4: cosines from the kNN lists where present, else computed.
    list_keys = (np.arange(n, dtype=np.int64)[:, None] * n + rank).reshape(-1)
    order = np.argsort(list_keys)
    list_keys, list_sims = list_keys[order], sims.reshape(-1)[order].astype(np.float64)
    pos = np.minimum(np.searchsorted(list_keys, e_keys), len(list_keys) - 1)
    found = list_keys[pos] == e_keys
    cos = np.where(found, list_sims[pos], 0.0)
    missing = np.flatnonzero(~found)
    if len(missing):
        cos[missing] = _pair_cosines(x, inv_norm, rows[missing], cols[missing])
    del e_keys, pos, found
    dist = np.maximum(2.0 - 2.0 * cos, 0.0) * scale[rows]
    # Softmax of -dist per row (every row holds at least the sample itself).
    weight = np.exp(np.minimum.reduceat(dist, ptr[:-1])[rows] - dist)
    weight /= np.add.reduceat(weight, ptr[:-1])[rows]
    v = sparse.csr_matrix((weight, cols, ptr), shape=(n, n))

    # Step 5: V_qe[i] = mean of V over rank[i, :k2].
    if k2 > 1:
        mean = sparse.csr_matrix(
            (np.ones(n * k2), rank[:, :k2].reshape(-1), np.arange(0, n * k2 + 1, k2)),
            shape=(n, n),
        )
        v = _product(mean, v)
        v.data /= k2
        v.sort_indices()
    return v


def _band_order(v: sparse.csr_matrix) -> np.ndarray:
    """A sample order that keeps rows sharing columns of V close together.

    Reverse Cuthill-McKee on the pattern of V: pairs that share a column then lie in a
    narrow band, so each chunk's (rows x partners) block spans a few thousand columns
    instead of all N (the O(N^2) scan of a dense row block is what would dominate past
    a few tens of thousands of samples).
    """
    pattern = sparse.csr_matrix(
        (np.ones(v.nnz, dtype=np.int8), v.indices, v.indptr), shape=v.shape
    )
    return reverse_cuthill_mckee(pattern, symmetric_mode=False).astype(np.int64)


def _chunk_bounds(
    triples: np.ndarray, reach: np.ndarray, stop: int, lowest: np.ndarray
) -> list[tuple[int, int]]:
    """Row chunks [a, b) of at most _TRIPLE_BUDGET triples and _BLOCK_BUDGET block entries.

    ``triples``: (stop,) per-row triple counts; ``reach``: (stop,) last partner column of
    each row; ``lowest``: (stop,) first partner column a chunk starting at that row uses.
    """
    cum = np.concatenate([[0], np.cumsum(triples)])
    bounds = []
    a = 0
    while a < stop:
        b = int(np.searchsorted(cum, cum[a] + _TRIPLE_BUDGET, side="right")) - 1
        b = max(a + 1, min(b, stop))
        while b > a + 1 and (b - a) * (int(reach[a:b].max()) + 1 - lowest[a]) > _BLOCK_BUDGET:
            b = a + (b - a) // 2
        bounds.append((a, b))
        a = b
    return bounds


def _jaccard_pairs(
    v: sparse.csr_matrix,
    stop: int,
    *,
    col_start: int | None = None,
    cutoff: float | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(rows, cols, 1 - s / (2 - s))`` for the pairs of rows of V that share a column
    (step 6), chunk by chunk.

    Rows ``i < stop``; columns ``j >= col_start`` when it is given (the re-ranking's
    query x gallery rectangle); else every unordered pair once (the symmetric half,
    half the work), in a band order of the samples (:func:`_band_order`), so either of
    (i, j) and (j, i) may come out. With a ``cutoff``, pairs whose distance is clearly
    above it are skipped early (the caller still applies the exact test). Chunks run on
    ``torch.get_num_threads()`` threads.
    """
    n = v.shape[1]
    perm = None
    if col_start is None:
        perm = _band_order(v)
        inverse = np.empty(n, dtype=v.indices.dtype)
        inverse[perm] = np.arange(n, dtype=v.indices.dtype)
        v = v[perm]
        v.indices = inverse[v.indices]
        v.has_sorted_indices = False
        v.sort_indices()
    # The inverted index (for every column, its rows, sorted, and values), with the CSR
    # position of each CSC entry so that an entry (i, c) knows its place in column c.
    csr_pos = sparse.csr_matrix(
        (np.arange(v.nnz, dtype=np.int64) + 1, v.indices, v.indptr), shape=v.shape
    ).tocsc()
    end = int(v.indptr[stop])
    entry_rows = np.repeat(np.arange(stop, dtype=np.int64), np.diff(v.indptr[: stop + 1]))
    entry_cols = v.indices[:end].astype(np.int64)
    col_end = csr_pos.indptr[1:][entry_cols]
    if col_start is None:
        # Partners j >= i of (i, c): column c's list from (i, c) itself on.
        first = np.empty(v.nnz, dtype=np.int64)
        first[csr_pos.data - 1] = np.arange(v.nnz, dtype=np.int64)
        first = first[:end]
        lowest = np.arange(stop, dtype=np.int64)
    else:
        col_keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(csr_pos.indptr)) * n
        first = np.searchsorted(col_keys + csr_pos.indices, entry_cols * n + col_start)
        del col_keys
        lowest = np.full(stop, col_start, dtype=np.int64)
    lens = col_end - first
    last = np.where(lens > 0, csr_pos.indices[np.maximum(col_end - 1, 0)], -1)
    # Last partner column of each row (rows without entries reach nothing).
    row_ptr = v.indptr[: stop + 1].astype(np.int64)
    filled = np.flatnonzero(np.diff(row_ptr) > 0)
    reach = lowest.copy()
    if len(filled):
        reach[filled] = np.maximum(np.maximum.reduceat(last, row_ptr[filled]), lowest[filled])
    triples = np.bincount(entry_rows, weights=lens, minlength=stop)
    bounds = _chunk_bounds(triples, reach, stop, lowest)
    min_sum = 0.0 if cutoff is None else 2 * (1 - cutoff) / (2 - cutoff) * (1 - 1e-9)

    value, col_rows = v.data[:end], csr_pos.indices.astype(np.int64)
    col_value = v.data[csr_pos.data - 1]
    del csr_pos, entry_cols, col_end
    ramp = np.arange(int(max((triples[a:b].sum() for a, b in bounds), default=0)) + 1)

    def chunk(bound: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # numpy releases the GIL in repeats, gathers, ufuncs and bincount, so chunks
        # overlap. Every per-entry quantity is spread over its triples by np.repeat (a
        # sequential copy) rather than an index gather; only the column lists are gathered.
        a, b = bound
        low = int(lowest[a])
        width = int(reach[a:b].max()) + 1 - low
        lo, hi = int(v.indptr[a]), int(v.indptr[b])
        seg = lens[lo:hi]
        # Each triple's position in column c's list: the entry's first partner + a ramp.
        where = np.repeat(first[lo:hi] - (np.cumsum(seg) - seg), seg)
        where += ramp[: len(where)]
        terms = np.minimum(np.repeat(value[lo:hi], seg), col_value[where])
        keys = np.repeat((entry_rows[lo:hi] - a) * width - low, seg)
        keys += col_rows[where]
        del where
        # Sums in triple order from 0.0, as np.add.at would give, a few times faster.
        sums = np.bincount(keys, weights=terms, minlength=(b - a) * width)
        del keys, terms
        # d = 1 - s / (2 - s) falls as s grows: d <= cutoff needs s >= 2 (1 - cutoff) /
        # (2 - cutoff). A bool mask of that (with slack for rounding) is far cheaper to
        # scan than the float block, and most sharing pairs fail it.
        hit = np.flatnonzero(sums >= min_sum if min_sum > 0 else sums)
        s = sums[hit]
        return hit // width + a, hit % width + low, 1.0 - s / (2.0 - s)

    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        for rows, cols, dist in pool.map(chunk, bounds):
            if perm is not None:
                rows, cols = perm[rows], perm[cols]
            yield rows, cols, dist


def _half_width(k1: int) -> int:
    # The originals write int(np.around(k1 / 2)): numpy rounds half to even.
    return int(np.around(k1 / 2)) + 1


def _check_k(n: int, k1: int, k2: int, width: int, *, who: str, knob: str) -> None:
    if int(k1) != k1 or int(k2) != k2 or k1 < 1 or k2 < 1:
        raise ClusteringError(f"{who}: k1={k1} and k2={k2} must be positive integers ({knob})")
    need = max(width, k2)
    if need > n:
        raise ClusteringError(
            f"{who}: k1={k1}, k2={k2} need {need} neighbours per sample but there are only "
            f"{n} samples; lower {knob}"
        )


def given_neighbours(
    neighbours: tuple[np.ndarray, np.ndarray], n: int, depth: int, *, who: str
) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed kNN lists ``(indices, similarities)`` checked and cut to their first
    ``depth`` columns (a view).

    Both must be (n, K) with ``K >= depth``, the indices integers with every row starting
    with its own sample (the :func:`unreid.cluster.knn` order). The first ``depth``
    columns of a deeper sorted list are exactly the shallower list, since the order
    (self first, decreasing similarity, ties by increasing index) is a total order;
    cutting also keeps the deeper columns out of the cosine lookups, so results do not
    depend on the depth. Raises :class:`ClusteringError` (one line) otherwise.
    """
    rank, sims = (np.asarray(a) for a in neighbours)
    if rank.ndim != 2 or rank.shape[0] != n or sims.shape != rank.shape:
        raise ClusteringError(
            f"{who}: neighbours must be (indices, similarities) of shape ({n}, K), got "
            f"{rank.shape} and {sims.shape}; pass the kNN lists of these features"
        )
    if rank.shape[1] < depth:
        raise ClusteringError(
            f"{who}: the neighbour lists hold {rank.shape[1]} neighbours per sample but "
            f"{depth} are needed; search at least {depth} (or pass no neighbours)"
        )
    if not np.issubdtype(rank.dtype, np.integer) or not (
        rank[:, 0] == np.arange(n)
    ).all():
        raise ClusteringError(
            f"{who}: neighbour indices must be integers with each sample first in its own "
            "row (unreid.cluster.knn's order); pass the kNN lists of these features"
        )
    return rank[:, :depth].astype(np.int64, copy=False), sims[:, :depth]


def jaccard_distance(
    features: np.ndarray | torch.Tensor,
    k1: int = 30,
    k2: int = 6,
    *,
    cutoff: float | None = None,
    search: Search = "auto",
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> sparse.csr_matrix:
    """Sparse k-reciprocal Jaccard distance, as cluster-contrast's ``compute_jaccard_distance``.

    Args:
        features: (N, D) float array or tensor, any device (L2-normalised inside;
            float64 input is computed in float64, anything else in float32 for
            the kNN GEMM; the encoding itself is always float64).
        k1: neighbours (self included) of the k-reciprocal sets; ``round(k1 / 2) + 1``
            for the candidates' sets. Needs ``k1 <= N``.
        k2: neighbours (self included) of the local query expansion; ``k2 <= k1``.
        cutoff: keep only pairs at distance ``<= cutoff`` (pass the DBSCAN eps);
            ``None`` keeps every pair that shares a k-reciprocal neighbour. Must lie
            in (0, 1].
        search: the kNN search (:func:`unreid.cluster.knn`): ``"exact"``, ``"faiss"``
            (approximate) or ``"auto"`` (faiss from 250,000 samples on when installed).
            Everything after the kNN lists is exact.
        neighbours: precomputed kNN lists of these features, ``(indices (N, K) int,
            similarities (N, K) float)`` with ``K >= k1``, sorted as
            :func:`unreid.cluster.knn` sorts them; ``search`` is then unused. Only the
            first k1 columns are read, so several graphs can share one deeper search
            and give exactly (bit for bit) what their own search would: pass the lists
            of the same search (``unreid.cluster.knn.neighbours``, which keeps float64
            similarities for float64 features; :func:`unreid.cluster.knn` gives float32).
            Two exceptions: among exactly tied similarities at the k1-th place (duplicate
            samples) faiss's flat index, the own search of float32 features on the CPU
            when faiss is installed, keeps a member of its own choosing, where the cut
            of a deeper list keeps the lowest index (the documented rule); and the
            approximate search refines more candidates for a deeper list, so its first
            k1 can be better neighbours than a k1-deep search finds.

    Returns:
        (N, N) ``scipy.sparse.csr_matrix``, float64, canonical (sorted indices),
        symmetric up to float rounding. Stored entries are Jaccard distances in
        [0, 1); a missing entry means distance 1 (no shared neighbour) or, with a
        cutoff, "farther than cutoff". The diagonal is always stored, as an
        explicit 0.0, and so is any other exact 0 (duplicate samples), so that
        :func:`unreid.cluster.dbscan` counts them as neighbours.

    Raises:
        ClusteringError: bad features (see :func:`unreid.cluster.knn`), k1/k2 out
            of range, cutoff outside (0, 1], an unknown search or faiss missing,
            neighbour lists of another shape or shallower than k1.
    """
    x, inv_norm = as_features(features, who="jaccard_distance")
    n = x.shape[0]
    _check_k(n, k1, k2, k1, who="jaccard_distance", knob="cluster.k1")
    if k2 > k1:
        raise ClusteringError(
            f"jaccard_distance: k2={k2} must not exceed k1={k1}; lower cluster.k2"
        )
    if cutoff is not None and not 0.0 < float(cutoff) <= 1.0:
        raise ClusteringError(
            f"jaccard_distance: cutoff={cutoff} must lie in (0, 1] (Jaccard distances do); "
            "set cluster.eps below 1"
        )
    k1, k2 = int(k1), int(k2)
    if neighbours is None:
        rank, sims = search_neighbours(x, inv_norm, k1, search=search)
    else:
        rank, sims = given_neighbours(neighbours, n, k1, who="jaccard_distance")
    v = _encode(
        x, inv_norm, rank, sims, width=k1, half_width=_half_width(k1), k2=k2,
        scale=np.ones(n),
    )
    del rank, sims
    return _jaccard_matrix(v, n, cutoff)


def _jaccard_matrix(v: sparse.csr_matrix, n: int, cutoff: float | None) -> sparse.csr_matrix:
    """The (n, n) CSR Jaccard distances of the encoded neighbour rows ``v`` (pairs above
    ``cutoff`` left out, zeros kept as stored entries), from the upper-triangle pair
    sums of :func:`_jaccard_pairs` mirrored: the matrix is exactly symmetric."""
    parts_r, parts_c, parts_d = [], [], []
    for rows, cols, dist in _jaccard_pairs(v, n, cutoff=cutoff):
        dist = np.maximum(dist, 0.0)  # cluster-contrast clips rounding below 0
        dist[rows == cols] = 0.0
        if cutoff is not None:
            keep = dist <= cutoff
            rows, cols, dist = rows[keep], cols[keep], dist[keep]
        parts_r.append(rows)
        parts_c.append(cols)
        parts_d.append(dist)
    upper_r, upper_c, upper_d = (np.concatenate(p) for p in (parts_r, parts_c, parts_d))
    low = upper_r != upper_c
    rows = np.concatenate([upper_r, upper_c[low]])
    cols = np.concatenate([upper_c, upper_r[low]])
    dist = np.concatenate([upper_d, upper_d[low]])
    del upper_r, upper_c, upper_d, low
    order = np.argsort(rows * n + cols)
    # Built from (data, indices, indptr), never through a path that drops explicit zeros.
    index_dtype = np.int32 if n < 2**31 else np.int64
    return sparse.csr_matrix(
        (dist[order], cols[order].astype(index_dtype),
         np.searchsorted(rows[order], np.arange(n + 1))),
        shape=(n, n),
    )


def rerank(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_: float = 0.3,
) -> np.ndarray:
    """Test-time k-reciprocal re-ranking (Zhong et al. 2017), as the original ``re_ranking``.

    The original distance is the squared Euclidean distance of the L2-normalised
    features, ``d = max(2 - 2 cos, 0)``, divided by its maximum over each row of
    the (Q+G) x (Q+G) matrix (the original's ``re_ranking`` fed with Euclidean
    distances; a row whose samples are all identical is left unscaled). The
    k-reciprocal encoding runs over all Q+G samples (``rank[:, :k1 + 1]``, candidates
    ``rank[:, :round(k1 / 2) + 1]``, expansion over ``k2``) and

        final = (1 - lambda_) * jaccard + lambda_ * d,   query rows x gallery columns.

    Memory: the features once more (the concatenated Q+G set), kNN lists, the
    sparse encoding and the (Q, G) answer; never a (Q+G)^2 matrix.

    Args:
        q_feats: (Q, D) query features; g_feats: (G, D) gallery features.
        k1, k2, lambda_: the paper's parameters (20, 6, 0.3); ``k1 + 1 <= Q + G``.

    Returns:
        (Q, G) float32 numpy distance matrix (smaller = more similar).
    """
    q, q_inv = as_features(q_feats, who="rerank (query)")
    g, g_inv = as_features(g_feats, who="rerank (gallery)")
    if q.shape[1] != g.shape[1] or q.device != g.device:
        raise ClusteringError(
            f"rerank: query features {tuple(q.shape)} on {q.device} and gallery features "
            f"{tuple(g.shape)} on {g.device} must share the feature dimension and device"
        )
    if not 0.0 <= float(lambda_) <= 1.0:
        raise ClusteringError(f"rerank: lambda_={lambda_} must lie in [0, 1]")
    dtype = torch.promote_types(q.dtype, g.dtype)
    x = torch.cat([q.to(dtype), g.to(dtype)])
    inv_norm = torch.cat([q_inv.to(dtype), g_inv.to(dtype)])
    num_q, n = q.shape[0], x.shape[0]
    del q, g
    _check_k(n, k1, k2, k1 + 1, who="rerank", knob="k1 (or evaluate without re-ranking)")
    k1, k2 = int(k1), int(k2)
    lam = float(lambda_)

    out = np.empty((num_q, n - num_q), dtype=np.float32)

    def keep_query_block(start: int, stop: int, block: torch.Tensor) -> None:
        # Query rows' cosines to the gallery, kept while the kNN pass has them.
        if start < num_q:
            rows = min(stop, num_q) - start
            out[start : start + rows] = block[:rows, num_q:].cpu().numpy()

    rank_t, sims_t, row_min = scan(
        x, inv_norm, max(k1 + 1, k2), with_row_min=True, on_block=keep_query_block
    )
    assert row_min is not None  # with_row_min=True
    row_max = np.maximum(2.0 - 2.0 * row_min.double().cpu().numpy(), 0.0)
    scale = np.divide(1.0, row_max, out=np.ones(n), where=row_max > 0)
    rank, sims = rank_t.cpu().numpy(), sims_t.cpu().numpy()
    del rank_t, sims_t
    v = _encode(
        x, inv_norm, rank, sims, width=k1 + 1, half_width=_half_width(k1), k2=k2, scale=scale
    )
    del rank, sims, x
    # out holds cosines: turn them into lambda * d + (1 - lambda) * 1 (pairs sharing no
    # neighbour have Jaccard distance 1), chunk by chunk to stay in float32.
    step = max(1, (1 << 22) // max(1, n - num_q))
    for s in range(0, num_q, step):
        e = min(num_q, s + step)
        d = np.maximum(2.0 - 2.0 * out[s:e].astype(np.float64), 0.0) * scale[s:e, None]
        out[s:e] = lam * d + (1.0 - lam)
    for rows, cols, dist in _jaccard_pairs(v, num_q, col_start=num_q):
        out[rows, cols - num_q] += ((1.0 - lam) * (dist - 1.0)).astype(np.float32)
    return out
