"""Density clustering of features in one call: k-reciprocal Jaccard distances + DBSCAN.

The clustering cluster-contrast and SFE-CR make their pseudo-labels with, and
the class count RSL and PUL use when none is configured. The Jaccard graph
keeps only pairs closer than ``eps`` (nothing N x N is built; see
:func:`unreid.cluster.jaccard_distance` and :func:`unreid.cluster.dbscan`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from unreid.cluster.dbscan import dbscan
from unreid.cluster.jaccard import jaccard_distance
from unreid.cluster.labels import num_clusters

__all__ = ["estimate_num_classes", "jaccard_dbscan", "shrink_k"]


def shrink_k(k1: int, k2: int, n: int) -> tuple[int, int]:
    """Neighbourhood sizes for a set of only ``n`` samples: ``k1`` capped at ``n``, then
    ``k2`` capped at the capped ``k1`` (the Jaccard graph needs ``k2 <= k1 <= n``)."""
    small_k1 = min(int(k1), int(n))
    return small_k1, min(int(k2), small_k1)


def jaccard_dbscan(
    features: np.ndarray | torch.Tensor,
    *,
    k1: int,
    k2: int,
    eps: float,
    min_samples: int,
    warn: bool = True,
    knn: str = "auto",
) -> np.ndarray:
    """DBSCAN labels of k-reciprocal Jaccard distances.

    Args:
        features: (N, D) float features (L2-normalised inside).
        k1, k2: Jaccard neighbourhood sizes, ``k2 <= k1 <= N``.
        eps: DBSCAN radius in Jaccard distance, in (0, 1].
        min_samples: neighbours (self included) that make a DBSCAN core sample.
        warn: False silences the "all samples are outliers" warning (for callers
            that cluster many small sets and summarise the result themselves).
        knn: the kNN search (``cluster.knn``): auto | exact | faiss (approximate).

    Returns:
        (N,) int64 labels, clusters numbered 0..C-1 by their lowest sample index,
        ``-1`` for outliers.
    """
    if not warn:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return jaccard_dbscan(
                features, k1=k1, k2=k2, eps=eps, min_samples=min_samples, knn=knn
            )
    dist = jaccard_distance(features, k1=k1, k2=k2, cutoff=eps, search=knn)  # type: ignore[arg-type]
    return dbscan(dist, eps, min_samples=min_samples)


def estimate_num_classes(
    features: np.ndarray | torch.Tensor,
    *,
    k1: int,
    k2: int,
    eps: float,
    min_samples: int,
    minimum: int = 2,
) -> int:
    """Number of classes of (N, D) ``features``: their Jaccard + DBSCAN clusters, at least
    ``minimum``.

    ``k1`` and ``k2`` are lowered to fit N (:func:`shrink_k`), so any N >= 1 gives a
    count; finding no cluster at all is no error here (the count is then ``minimum``).
    """
    k1, k2 = shrink_k(k1, k2, int(features.shape[0]))
    labels = jaccard_dbscan(
        features, k1=k1, k2=k2, eps=float(eps), min_samples=int(min_samples), warn=False
    )
    return max(int(minimum), num_clusters(labels))
