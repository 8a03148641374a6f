"""Exact k-nearest neighbours by cosine similarity.

Every clustering step starts from the same question: which samples are closest
to each sample? :func:`knn` answers it exactly (no approximate index) with one
chunked GEMM pass over the data, so memory stays O(chunk x N) however large N
is, and it is the time floor every clustering benchmark is compared against.

Conventions (shared by :mod:`unreid.cluster.jaccard`):

- Cosine similarity of L2-normalised rows. Features need not be normalised;
  the GEMM block is scaled by the inverse row norms instead, so no normalised
  copy of the (N, D) matrix is ever made.
- A sample is always its own neighbour 0, even when another sample is an
  exact duplicate or rounding puts a neighbour's similarity at 1 + 1e-7: the
  k-reciprocal encoding relies on ``rank[i, 0] == i``.
- The other neighbours follow by decreasing similarity; equal similarities are
  ordered by increasing sample index. That rule also decides which of several
  tied samples at the k-th place get in, so the result is fully deterministic.
- float64 features are searched in float64 (the dense references in the tests
  rely on it); anything else in float32.

Past a few 100,000 samples the exact pass (O(N^2 D)) dominates everything else, so
``search="faiss"`` (or ``"auto"`` from :data:`APPROX_FROM` samples on, when faiss
is installed) searches a PCA projection with faiss and re-scores the candidates
with the full features instead: the same conventions on the
neighbours it finds, most of them the exact ones (measured by
``bench/cluster_bench.py`` through the labels the clustering gives).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from unreid.errors import ClusteringError

__all__ = ["APPROX_FROM", "knn", "resolve_search"]

Backend = Literal["auto", "torch", "faiss"]
Search = Literal["auto", "exact", "faiss"]
SEARCHES = ("auto", "exact", "faiss")

# search="auto" switches to the approximate faiss search from this many samples on. The
# exact pass still fits 100,000 samples in minutes on 2 cores, while the approximate one
# lost labels on hard, near-isotropic features (ARI 0.75 to exact at 12,936 samples;
# docs/benchmarks.md), so auto stays exact until the O(N^2) pass is far too slow.
APPROX_FROM = 250_000
# Approximate search: PCA dimension of the candidate search, rows the PCA is fitted on,
# candidates per neighbour re-scored with the full features.
_PCA_DIM = 256
_PCA_SAMPLE = 20_000
_REFINE = 4
# Rows normalised and added to / searched in the faiss index at once.
_FAISS_ROWS = 8192

# Largest (chunk x N) similarity block of the GEMM pass: 2**24 entries = 64 MiB in float32.
_BLOCK_ELEMS = 1 << 24


def _faiss_available() -> bool:
    try:  # faiss is optional: the faiss extra (faiss-cpu)
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def as_features(
    features: np.ndarray | torch.Tensor, *, who: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (N, D) features; return them (uncopied when possible) and their inverse norms.

    The features keep their device; their dtype becomes float64 for float64 input and
    float32 otherwise. Raises :class:`ClusteringError` (one line) for a wrong shape, an
    empty array, NaN/inf values or all-zero rows.
    """
    x = torch.as_tensor(features)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ClusteringError(
            f"{who}: features must be a non-empty (N, D) array, got shape {tuple(x.shape)}"
        )
    if x.dtype != torch.float64:
        x = x.float()
    norms = torch.linalg.vector_norm(x, dim=1)
    if not bool(torch.isfinite(norms).all()):
        bad = ~torch.isfinite(x).all(dim=1)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:5].tolist()
            raise ClusteringError(
                f"{who}: {int(bad.sum())} feature rows contain NaN/inf (first rows {rows}); the "
                "model produced non-finite outputs - lower optim.lr or resume from the last good "
                "checkpoint"
            )
        raise ClusteringError(f"{who}: feature norms overflow {x.dtype}; rescale the features")
    zero = norms <= torch.finfo(x.dtype).tiny
    if bool(zero.any()):
        rows = torch.nonzero(zero).flatten()[:5].tolist()
        raise ClusteringError(
            f"{who}: {int(zero.sum())} feature rows are all zero (first rows {rows}); cosine "
            "similarity is undefined for them - drop those samples"
        )
    return x, 1.0 / norms


def default_chunk(n: int) -> int:
    """Rows per GEMM chunk so that one (chunk x n) block holds at most 2**24 entries."""
    return max(1, min(n, _BLOCK_ELEMS // max(n, 1)))


def _fix_boundary_ties(
    block: torch.Tensor, vals: torch.Tensor, ids: torch.Tensor, k: int
) -> None:
    """Make the k selected columns follow the tie rule (in place).

    ``torch.topk`` picks an unspecified member among equal values at the k-th place.
    Rows where more than k entries reach the k-th value are redone: everything above
    it, then the lowest-index entries equal to it. Exact ties are rare (duplicate
    images), so the loop runs over few rows.
    """
    kth = vals[:, -1:]
    crowded = torch.nonzero((block >= kth).sum(dim=1) > k).flatten()
    for r in crowded.tolist():
        row = block[r]
        above = torch.nonzero(row > kth[r]).flatten()
        tied = torch.nonzero(row == kth[r]).flatten()[: k - len(above)]
        chosen = torch.cat([above, tied])
        ids[r] = chosen
        vals[r] = row[chosen]


def _order_rows(vals: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort every row by decreasing value, equal values by increasing index."""
    ids, perm = torch.sort(ids, dim=1)
    vals = torch.gather(vals, 1, perm)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, torch.gather(ids, 1, perm)


def scan(
    x: torch.Tensor,
    inv_norm: torch.Tensor,
    k: int,
    chunk: int | None = None,
    *,
    with_row_min: bool = False,
    on_block: Callable[[int, int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The chunked GEMM pass: top-k cosine neighbours of every row (torch, x's device).

    Returns ``(indices (N, k) int64, similarities (N, k) x.dtype, row_min (N,) | None)``
    where ``row_min`` is each row's smallest cosine similarity over all N samples (the
    re-ranking needs it to normalise distances by their row maximum). ``on_block(start,
    stop, block)`` sees every (stop - start, N) cosine block before it is consumed.
    """
    n = x.shape[0]
    chunk = default_chunk(n) if chunk is None else int(chunk)
    ids_out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    vals_out = torch.empty(n, k, dtype=x.dtype, device=x.device)
    row_min = torch.empty(n, dtype=x.dtype, device=x.device) if with_row_min else None
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        block = x[s:e] @ x.T
        block.mul_(inv_norm[s:e, None]).mul_(inv_norm[None, :])
        if row_min is not None:
            row_min[s:e] = block.amin(dim=1)
        if on_block is not None:
            on_block(s, e, block)
        diag = block.diagonal(offset=s)
        self_sim = diag.clone()
        diag.fill_(inf)  # self first, whatever the rounding or duplicates say
        vals, ids = torch.topk(block, k, dim=1)
        _fix_boundary_ties(block, vals, ids, k)
        vals, ids = _order_rows(vals, ids)
        vals[:, 0] = self_sim
        ids_out[s:e], vals_out[s:e] = ids, vals
        del block
    return ids_out, vals_out, row_min


def _unit_rows(x: torch.Tensor, inv_norm: torch.Tensor, s: int, e: int) -> np.ndarray:
    """Rows s:e of x, L2-normalised, as a C-contiguous float32 numpy array (what faiss
    takes): built block by block so that no normalised copy of all N rows exists
    besides the one inside the faiss index."""
    return np.ascontiguousarray((x[s:e] * inv_norm[s:e, None]).float().cpu().numpy())


def _faiss_search(index, x: torch.Tensor, inv_norm: torch.Tensor, k: int) -> tuple[
    np.ndarray, np.ndarray
]:
    """Add every normalised row to ``index`` and search them all, ``_FAISS_ROWS`` at a
    time; the results in the module's order (:func:`_self_first`)."""
    n = x.shape[0]
    for s in range(0, n, _FAISS_ROWS):
        index.add(_unit_rows(x, inv_norm, s, min(n, s + _FAISS_ROWS)))
    ids = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    self_sim = np.empty(n, dtype=np.float32)
    for s in range(0, n, _FAISS_ROWS):
        e = min(n, s + _FAISS_ROWS)
        q = _unit_rows(x, inv_norm, s, e)
        sims[s:e], ids[s:e] = index.search(q, k)
        self_sim[s:e] = (q * q).sum(axis=1)
    return _self_first(ids, sims, self_sim)


def _faiss_knn(x: torch.Tensor, inv_norm: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same answer from faiss ``IndexFlatIP`` (exact inner products), then the same
    self-first and tie rules applied to faiss's k results."""
    import faiss  # the faiss extra; this path is taken only when it is installed

    return _faiss_search(faiss.IndexFlatIP(x.shape[1]), x, inv_norm, k)


def _self_first(ids: np.ndarray, sims: np.ndarray, self_sim: np.ndarray) -> tuple[
    np.ndarray, np.ndarray
]:
    """faiss's k results in the module's order: self first (put in place of the last
    result when faiss did not return it), then by decreasing similarity, ties by index."""
    n = len(ids)
    own = np.arange(n)[:, None]
    is_self = ids == own
    missing = ~is_self.any(axis=1)  # self pushed out by >= k exact duplicates (or missed)
    ids[missing, -1] = np.flatnonzero(missing)
    is_self[missing, -1] = True
    order = np.lexsort((ids, -sims, ~is_self), axis=-1)
    ids = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    sims = np.take_along_axis(sims, order, axis=1)
    sims[:, 0] = self_sim
    return ids, sims


def _faiss_approx_knn(
    x: torch.Tensor, inv_norm: torch.Tensor, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k by cosine: candidates from an exact inner-product search on a
    PCA projection of the normalised rows (``_PCA_DIM`` dims, so the GEMM costs D /
    _PCA_DIM times less), re-scored with the full features (faiss ``IndexRefineFlat``,
    ``_REFINE`` x k candidates). Rows are normalised block by block."""
    import faiss  # the faiss extra; this path is taken only when it is installed

    n, d = x.shape
    sample = np.random.default_rng(0).choice(n, size=min(n, _PCA_SAMPLE), replace=False)
    sample.sort()
    dim = min(_PCA_DIM, d, len(sample))  # faiss fits at most one component per sample

    pca = faiss.PCAMatrix(d, dim)
    pca.train(np.ascontiguousarray(
        (x[sample] * inv_norm[sample, None]).float().cpu().numpy()
    ))
    index = faiss.IndexRefineFlat(faiss.IndexPreTransform(pca, faiss.IndexFlatIP(dim)))
    index.k_factor = _REFINE
    return _faiss_search(index, x, inv_norm, k)


def resolve_search(search: str, n: int) -> str:
    """``"exact"`` or ``"faiss"``: what ``search`` means for N = ``n`` samples.

    ``"auto"`` is faiss from :data:`APPROX_FROM` samples on when faiss is installed,
    else exact. Raises :class:`ClusteringError` for an unknown value or ``"faiss"``
    without faiss installed.
    """
    if search not in SEARCHES:
        raise ClusteringError(
            f"knn: search must be auto, exact or faiss, got {search!r}; set cluster.knn"
        )
    if search == "auto":
        return "faiss" if n >= APPROX_FROM and _faiss_available() else "exact"
    if search == "faiss" and not _faiss_available():
        raise ClusteringError(
            "knn: cluster.knn=faiss needs faiss: pip install 'unreid[faiss]' (or set "
            "cluster.knn=exact)"
        )
    return search


def knn(
    features: np.ndarray | torch.Tensor,
    k: int,
    *,
    chunk: int | None = None,
    backend: Backend = "auto",
    search: Search = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours of every sample by cosine similarity (exact by default).

    Args:
        features: (N, D) float array or tensor (any device); L2-normalised inside.
        k: neighbours per sample, counting the sample itself (neighbour 0), so
            ``1 <= k <= N``.
        chunk: rows per GEMM block; memory is O(chunk x N). Default: at most
            2**24 similarities per block.
        backend: ``"torch"`` (chunked GEMM on the features' device), ``"faiss"``
            (``IndexFlatIP``, CPU; needs the ``faiss`` extra) or ``"auto"``: faiss
            when it is installed and the features are float32 on the CPU.
        search: ``"exact"`` (the backends above), ``"faiss"`` (approximate: faiss on a
            PCA projection, candidates re-scored exactly, CPU; needs the ``faiss``
            extra) or ``"auto"``: faiss from :data:`APPROX_FROM` samples on when
            installed, else exact.

    Returns:
        ``(indices, similarities)``: (N, k) int64 and (N, k) float32 numpy arrays.
        Row i starts with i itself, then the others by decreasing cosine
        similarity; equal similarities are ordered by increasing index (the same
        rule picks among ties at the k-th place). Both exact backends agree up to
        float rounding of near-ties; the approximate search may miss some neighbours
        (and then lists farther ones in their place).

    Raises:
        ClusteringError: empty, non-2-D, NaN/inf or all-zero features; k < 1 or k > N;
            an unknown backend or search; search="faiss" without faiss.
    """
    x, inv_norm = as_features(features, who="knn")
    n = x.shape[0]
    if not 1 <= int(k) <= n:
        raise ClusteringError(
            f"knn: k={k} must lie in [1, N={n}] (k counts the sample itself); lower k"
        )
    k = int(k)
    ids, sims = neighbours(x, inv_norm, k, chunk=chunk, backend=backend, search=search)
    return ids, sims.astype(np.float32, copy=False)


def neighbours(
    x: torch.Tensor,
    inv_norm: torch.Tensor,
    k: int,
    *,
    chunk: int | None = None,
    backend: Backend = "auto",
    search: Search = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` on validated features (see :func:`as_features`), similarities in the
    features' dtype (float64 stays float64). Numpy (N, k) int64 and float arrays."""
    if backend not in ("auto", "torch", "faiss"):
        raise ClusteringError(f"knn: backend must be auto, torch or faiss, got {backend!r}")
    if resolve_search(search, x.shape[0]) == "faiss":
        return _faiss_approx_knn(x, inv_norm, k)
    use_faiss = backend == "faiss" or (
        backend == "auto"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and _faiss_available()
    )
    if use_faiss:
        if not _faiss_available():
            raise ClusteringError("knn: backend='faiss' needs faiss: pip install 'unreid[faiss]'")
        return _faiss_knn(x, inv_norm, k)
    ids, sims, _ = scan(x, inv_norm, k, chunk)
    return ids.cpu().numpy(), sims.cpu().numpy()
