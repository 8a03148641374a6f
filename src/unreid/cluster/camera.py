"""Per-camera clusters and their camera-aware re-allocation into global ones (SFE-CR, eqs. 4-5).

Global DBSCAN clusters on re-ID features tend to split one person by camera
(background and light dominate). Clustering *inside* each camera
(:func:`camera_local_clusters`; on foreground features in SFE-CR) gives small,
reliable local clusters; when most of a local cluster already sits in one
global cluster, its remaining samples are pulled in
(:func:`reallocate_camera_clusters`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unreid.cluster.density import jaccard_dbscan, shrink_k
from unreid.cluster.labels import num_clusters
from unreid.errors import ClusteringError

__all__ = ["camera_local_clusters", "reallocate_camera_clusters", "standardize_per_camera"]


def _as_labels(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ClusteringError(
            f"reallocate_camera_clusters: {name} must be a 1-D integer array, "
            f"got shape {arr.shape} dtype {arr.dtype}"
        )
    return arr.astype(np.int64, copy=False)


def reallocate_camera_clusters(
    global_labels: np.ndarray,
    local_labels: np.ndarray,
    camids: np.ndarray,
    delta: float = 0.85,
) -> np.ndarray:
    """Move whole per-camera clusters into the global cluster that holds most of them.

    A local cluster is the pair ``(camid, local_label)`` with ``local_label >= 0``:
    callers may number the local clusters of each camera from 0 (as separate DBSCAN
    runs do) or globally; both give the same result. For each local cluster L the
    target is the global cluster G (``global_labels >= 0``; global outliers never
    count as a G) with the largest overlap ``|L ∩ G| / |L|``, ties going to the
    smallest G id. ``|L|`` counts all of L's samples, global outliers included. If
    the overlap is ``>= delta``, every sample of L gets label G: global outliers
    join G and samples of other global clusters move to G. Nothing else changes:
    samples with ``local_label == -1`` keep their global label, and a global
    cluster only loses samples to a G that holds ``>= delta`` of their local cluster.

    Labels are not renumbered: a global cluster whose members all moved leaves its
    id unused. ``delta > 1`` returns the global labels unchanged.

    Note on delta: the paper states delta = 0.85 (our default) but its own Fig. 4
    example moves a sample from a local cluster of 5 with 4 in G, an overlap of
    4/5 = 0.8, which needs ``delta <= 0.8``. Overlaps are compared as the float
    ``count / size >= delta``, so 4/5 >= 0.8 holds exactly.

    Args:
        global_labels: (N,) int, global cluster ids, -1 = outlier.
        local_labels: (N,) int, per-camera cluster ids, -1 = local outlier.
        camids: (N,) int camera ids.
        delta: overlap threshold in (0, inf); ``cluster.delta``.

    Returns:
        (N,) int64 labels, -1 = outlier.
    """
    g = _as_labels(global_labels, "global_labels")
    loc = _as_labels(local_labels, "local_labels")
    cam = _as_labels(camids, "camids")
    if not (len(g) == len(loc) == len(cam)):
        raise ClusteringError(
            "reallocate_camera_clusters: global_labels, local_labels and camids must have the "
            f"same length, got {len(g)}, {len(loc)}, {len(cam)}"
        )
    if isinstance(delta, bool) or math.isnan(float(delta)) or float(delta) <= 0.0:
        raise ClusteringError(
            f"reallocate_camera_clusters: delta must be > 0 (cluster.delta), got {delta!r}"
        )
    out = g.copy()
    in_local = np.flatnonzero(loc >= 0)
    if len(in_local) == 0:
        return out
    # Local cluster id = index of the (camid, local_label) pair.
    _, lid = np.unique(
        np.stack([cam[in_local], loc[in_local]], axis=1), axis=0, return_inverse=True
    )
    lid = lid.reshape(-1)
    size = np.bincount(lid)
    # Overlap counts |L ∩ G| over (L, G) pairs, global outliers excluded.
    member = g[in_local] >= 0
    pairs, counts = np.unique(
        np.stack([lid[member], g[in_local][member]], axis=1), axis=0, return_counts=True
    )
    if len(pairs) == 0:
        return out
    # Per L, the largest count first and then the smallest G: the first row of each L wins.
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs, counts = pairs[order], counts[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    best_l, best_g, best_n = pairs[first, 0], pairs[first, 1], counts[first]
    accepted = best_n / size[best_l] >= float(delta)
    target = np.full(len(size), -1, dtype=np.int64)
    target[best_l[accepted]] = best_g[accepted]
    moved = target[lid] >= 0
    out[in_local[moved]] = target[lid[moved]]
    return out


def camera_local_clusters(
    features: np.ndarray | torch.Tensor,
    camids: np.ndarray,
    *,
    k1: int,
    k2: int,
    eps: float,
    min_samples: int,
) -> tuple[np.ndarray, dict[str, int]]:
    """Jaccard + DBSCAN inside each camera (SFE-CR's local clusters).

    A camera with fewer images than ``k1`` is clustered with ``k1`` and ``k2``
    lowered to fit (:func:`~unreid.cluster.density.shrink_k`); a camera with
    fewer than ``max(2, min_samples)`` images cannot hold a cluster of two or
    more and gets no local cluster (all ``-1``). A camera without a cluster
    issues no warning: ``info`` counts them.

    Args:
        features: (N, D) float features.
        camids: (N,) int camera of each sample.
        k1, k2: Jaccard neighbourhood sizes.
        eps: DBSCAN radius of the local runs, in Jaccard distance.
        min_samples: DBSCAN core size of the local runs.

    Returns:
        labels: (N,) int64, local cluster ids numbered from 0 within each camera
            (by lowest sample index), ``-1`` for local outliers.
        info: ``local_clusters`` (total over cameras), ``local_outliers`` and
            ``cameras_without_local_clusters``.

    Raises:
        ClusteringError: ``camids`` does not have one entry per feature row.
    """
    cam = np.asarray(camids, dtype=np.int64).reshape(-1)
    if len(cam) != features.shape[0]:
        raise ClusteringError(
            f"camera_local_clusters: {features.shape[0]} features but {len(cam)} camera ids"
        )
    rows = torch.as_tensor(features)
    labels = np.full(len(cam), -1, dtype=np.int64)
    total, empty = 0, 0
    smallest = max(2, int(min_samples))
    for c in np.unique(cam):
        idx = np.flatnonzero(cam == c)
        if len(idx) < smallest:
            empty += 1
            continue
        small_k1, small_k2 = shrink_k(k1, k2, len(idx))
        local = jaccard_dbscan(
            rows[torch.from_numpy(idx).to(rows.device)], k1=small_k1, k2=small_k2, eps=eps,
            min_samples=int(min_samples), warn=False,
        )
        labels[idx] = local
        found = num_clusters(local)
        total += found
        empty += found == 0
    info = {
        "local_clusters": total,
        "local_outliers": int((labels < 0).sum()),
        "cameras_without_local_clusters": empty,
    }
    return labels, info


def standardize_per_camera(
    features: torch.Tensor,
    camids: np.ndarray,
    *,
    per_dimension: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per camera: subtract the camera's mean feature and divide by its spread.

    A camera's background and light shift all its features the same way; removing
    each camera's mean takes that shift out before features of different cameras are
    compared, and dividing by the spread gives every camera the same scale. The result
    is not L2-normalised: the cosine-based consumers
    (:func:`unreid.cluster.jaccard_distance`, the evaluation) normalise themselves.

    The spread is by default one number per camera, the root mean square distance of
    its samples to its mean, so directions inside a camera are kept. With
    ``per_dimension`` every dimension is divided by its own standard deviation in the
    camera (a camera-specific batch norm without affine parameters); that also raises
    low-variance noise dimensions to unit variance, which hurts when most dimensions
    are noise (measured in tests/test_methods_cap.py).

    Args:
        features: (N, D) float features, any scale (L2-normalised first, so the
            statistics do not depend on the norms).
        camids: (N,) int camera of each sample.
        per_dimension: divide per dimension instead of by one spread per camera.
        eps: added to every spread (a camera whose samples are identical becomes zeros
            there, not NaN).

    Returns:
        (N, D) float32 tensor on the features' device, ``(f - mean_c) / (spread_c +
        eps)`` with population statistics of camera c. The sample of a one-image camera
        would become a zero row (no direction): it is returned L2-normalised instead.
    """
    cam = torch.as_tensor(np.asarray(camids, dtype=np.int64).reshape(-1), device=features.device)
    if cam.numel() != features.shape[0]:
        raise ClusteringError(
            f"standardize_per_camera: {features.shape[0]} features but {cam.numel()} camera ids"
        )
    x = torch.nn.functional.normalize(features.float(), dim=1)
    ids, slot = torch.unique(cam, return_inverse=True)
    counts = torch.bincount(slot, minlength=len(ids)).to(x.dtype)[:, None]
    mean = torch.zeros(len(ids), x.shape[1], dtype=x.dtype, device=x.device)
    mean = mean.index_add(0, slot, x) / counts
    centred = x - mean[slot]
    var = torch.zeros_like(mean).index_add(0, slot, centred * centred) / counts
    if not per_dimension:
        var = var.sum(dim=1, keepdim=True)
    out = centred / (var.sqrt() + eps)[slot]
    single = (counts[:, 0] < 2)[slot]
    out[single] = x[single]
    return out
