"""Spherical k-means (cosine similarity) with greedy k-means++ seeding.

RSL and PUL cluster L2-normalised re-ID features into a fixed number of
classes. Spherical k-means maximises ``sum_i <x_i, c_{label_i}>`` over unit
centres ``c``; a centre is the L2-normalised sum of its members, and a sample
joins the centre with the largest cosine similarity.

Algorithm (deterministic for a seed on one machine):

- Seeding: greedy k-means++ (Arthur & Vassilvitskii 2007; the greedy variant
  scikit-learn uses): the first centre is a uniformly random sample; each next
  one is the best of ``2 + int(ln k)`` candidates drawn with probability
  proportional to the cosine distance ``1 - cos`` to the nearest chosen centre
  (on the unit sphere this is half the squared Euclidean distance, so it *is*
  k-means++), "best" meaning the smallest total distance afterwards. All
  candidates of a step are scored by one GEMM, so the greedy trials cost no
  more memory traffic than plain k-means++. Randomness: ``numpy.random.
  default_rng(seed)`` only.
- Lloyd iterations: assignment by chunked GEMM (at most 2**24 similarities in
  memory at a time), centres = normalised member sums. A cluster that becomes
  empty (or whose members cancel out) is re-seeded at the sample farthest from
  its own centre (the 2nd farthest for a second empty cluster, and so on).
- Stop after ``max_iter`` iterations (default 100), or when no assignment
  changes, or when the mean cosine similarity of the samples to their centres
  improves by less than ``tol`` (default 1e-5, absolute, in cosine units); the
  tolerance never stops an iteration that re-seeded an empty cluster.

Backends: the assignment step runs in torch on the features' device, or in
faiss (``IndexFlatIP``) when faiss is installed and the features are on the
CPU (``backend="auto"``). Seeding, updates and the stopping rule are shared, so
both backends return the same clusters up to float rounding of near-ties.

Fewer distinct feature directions than ``k`` (duplicated samples) is allowed:
some clusters then stay empty and their centre is a duplicate of a sample.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch

from unreid.cluster.knn import _faiss_available
from unreid.errors import ClusteringError

__all__ = ["kmeans"]

log = logging.getLogger(__name__)

# Largest (chunk x k) similarity block held at once: 2**24 float32 = 64 MiB.
_BLOCK_ELEMS = 1 << 24

Backend = Literal["auto", "torch", "faiss"]


def _unit_rows(features: np.ndarray | torch.Tensor, *, who: str) -> torch.Tensor:
    """Validate (N, D) features and return them L2-normalised, float32, on their device.

    Raises ClusteringError for a wrong shape, an empty array, non-finite values or
    all-zero rows (cosine similarity is undefined for them).
    """
    x = torch.as_tensor(features)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ClusteringError(
            f"{who}: features must be a non-empty (N, D) array, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        x = x.float()
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ClusteringError(
            f"{who}: {int(bad.sum())} feature rows contain NaN/inf (first rows {rows}); the model "
            "produced non-finite outputs - lower optim.lr or resume from the last good checkpoint"
        )
    x = x.float()
    norms = x.norm(dim=1)
    zero = norms <= 1e-12
    if bool(zero.any()):
        # Cosine similarity is undefined for a zero vector; it would also become a zero centre.
        rows = torch.nonzero(zero).flatten()[:5].tolist()
        raise ClusteringError(
            f"{who}: {int(zero.sum())} feature rows are all zeros (first rows {rows}); cosine "
            "similarity needs non-zero features - check the model output"
        )
    return x / norms[:, None]


def _check_seed(seed: int, who: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ClusteringError(f"{who}: seed must be an integer >= 0 (cluster.seed), got {seed!r}")
    return int(seed)


def _assign(
    x: torch.Tensor, centres: torch.Tensor, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre by cosine: labels (N,) int64 and their similarities (N,) float32."""
    if backend == "faiss":
        import faiss  # the faiss extra; the backend is chosen only when it is installed

        index = faiss.IndexFlatIP(centres.shape[1])
        index.add(np.ascontiguousarray(centres.numpy()))
        found_sims, found = index.search(np.ascontiguousarray(x.numpy()), 1)
        return torch.from_numpy(found[:, 0].astype(np.int64)), torch.from_numpy(found_sims[:, 0])
    n, k = x.shape[0], centres.shape[0]
    chunk = max(1, _BLOCK_ELEMS // k)
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    best = torch.empty(n, dtype=torch.float32, device=x.device)
    for s in range(0, n, chunk):
        # torch.max returns the first maximal index: ties go to the smallest cluster id.
        best[s : s + chunk], labels[s : s + chunk] = (x[s : s + chunk] @ centres.T).max(dim=1)
    return labels, best


def _seed_centres(x: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Greedy k-means++ on unit rows: returns the indices (k,) of the chosen samples."""
    n = x.shape[0]
    n_trials = 2 + int(math.log(k))
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    # cosine distance of every sample to its nearest chosen centre
    closest = (1.0 - x @ x[chosen[0]]).clamp_min_(0.0)
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    for i in range(1, k):
        cum = np.cumsum(closest.double().cpu().numpy())
        if cum[-1] <= 0.0:
            # Every sample coincides with a chosen centre (duplicates): any unused one will do.
            chosen[i] = rng.choice(np.flatnonzero(~taken))
            closest = torch.minimum(closest, (1.0 - x @ x[int(chosen[i])]).clamp_min_(0.0))
        else:
            cand = np.searchsorted(cum, rng.random(n_trials) * cum[-1], side="right")
            cand = np.minimum(cand, n - 1)
            # One GEMM scores all candidates: (n_trials, N) distances.
            dist = (1.0 - x[torch.from_numpy(cand).to(x.device)] @ x.T).clamp_min_(0.0)
            new_closest = torch.minimum(closest[None, :], dist)
            best = int(torch.argmin(new_closest.double().sum(dim=1)))
            chosen[i], closest = cand[best], new_closest[best]
        taken[chosen[i]] = True
    return torch.from_numpy(chosen).to(x.device)


def _update_centres(
    x: torch.Tensor, labels: torch.Tensor, best: torch.Tensor, k: int
) -> tuple[torch.Tensor, int]:
    """New unit centres from the assignment; returns them and how many were re-seeded."""
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    norms = sums.norm(dim=1)
    centres = sums / norms.clamp_min(1e-12)[:, None]
    empty = torch.nonzero(norms <= 1e-6).flatten()
    if len(empty):
        # Farthest samples from their own centre seed the empty clusters (a stable sort
        # keeps this deterministic).
        far = torch.argsort(best, stable=True)[: len(empty)]
        centres[empty[: len(far)]] = x[far]
    return centres, len(empty)


def kmeans(
    features: np.ndarray | torch.Tensor,
    k: int,
    *,
    seed: int,
    max_iter: int = 100,
    tol: float = 1e-5,
    backend: Backend = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical (cosine) k-means with greedy k-means++ seeding (see the module docstring).

    Args:
        features: (N, D) float array or tensor; L2-normalised here (need not be on input).
        k: number of clusters, 1 <= k <= N.
        seed: integer >= 0; the result is deterministic for a seed.
        max_iter: maximum number of Lloyd iterations after seeding.
        tol: stop when the mean cosine similarity to the centres improves by less than this.
        backend: "auto" (faiss if installed and the features are on the CPU, else torch),
            "torch" or "faiss".

    Returns:
        labels: (N,) int64 in [0, k), each sample's nearest centre (ties: smallest id).
        centres: (k, D) float32 on the CPU, L2-normalised rows.

    Raises:
        ClusteringError: NaN/inf features, k < 1, k > N, a negative seed, faiss asked
            for but missing.
    """
    x = _unit_rows(features, who="kmeans")
    n = x.shape[0]
    seed = _check_seed(seed, "kmeans")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ClusteringError(
            f"kmeans: k={k!r} clusters for {n} samples; k must be an integer in [1, N] - lower "
            "cluster.num_classes (RSL M / PUL K) or cluster.per_camera_k"
        )
    k = int(k)
    if max_iter < 0 or not math.isfinite(tol):
        raise ClusteringError(
            f"kmeans: max_iter must be >= 0 and tol finite, got {max_iter}, {tol}"
        )
    if backend == "auto":
        backend = "faiss" if x.device.type == "cpu" and _faiss_available() else "torch"
    if backend == "faiss" and not _faiss_available():
        raise ClusteringError(
            "kmeans: backend='faiss' but faiss is not installed; pip install "
            "faiss-cpu or use backend='torch'"
        )
    if backend not in ("torch", "faiss"):
        raise ClusteringError(f"kmeans: unknown backend {backend!r}; use auto, torch or faiss")
    if backend == "faiss":
        x = x.cpu().contiguous()

    rng = np.random.default_rng(seed)
    centres = x[_seed_centres(x, k, rng)].clone()
    labels, best = _assign(x, centres, backend)
    objective = float(best.double().mean())
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - logged below
        centres, reseeded = _update_centres(x, labels, best, k)
        new_labels, best = _assign(x, centres, backend)
        changed = bool((new_labels != labels).any())
        new_objective = float(best.double().mean())
        labels = new_labels
        improvement, objective = new_objective - objective, new_objective
        # A re-seeded centre that captured nobody (duplicates) leaves the labels unchanged,
        # so "no change" always stops; the tolerance only once no cluster was re-seeded.
        if not changed or (not reseeded and improvement < tol):
            break
    log.debug("kmeans: N=%d k=%d %d iterations, mean cos %.5f", n, k, iterations, objective)
    return labels.cpu().numpy(), centres.cpu().numpy().astype(np.float32, copy=False)
