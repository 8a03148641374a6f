"""Density clustering of features in one call: k-reciprocal Jaccard distances + DBSCAN.

The clustering cluster-contrast, SFE-CR and CAP make their pseudo-labels with, and
the class count RSL and PUL use when none is configured. The Jaccard graph
keeps only pairs closer than ``eps`` (nothing N x N is built; see
:func:`unreid.cluster.jaccard_distance` and :func:`unreid.cluster.dbscan`).
Given a :class:`CameraJaccard` (camera ids and widths) the distance is the
camera-aware one (:func:`unreid.cluster.ca_jaccard_distance`) instead, so every
method that clusters with these functions can switch to it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from unreid.cluster.ca_jaccard import ca_jaccard_distance
from unreid.cluster.dbscan import dbscan
from unreid.cluster.jaccard import jaccard_distance
from unreid.cluster.labels import num_clusters

__all__ = ["CameraJaccard", "estimate_num_classes", "jaccard_dbscan", "shrink_k"]


@dataclass(frozen=True)
class CameraJaccard:
    """What makes :func:`jaccard_dbscan` camera-aware: the camera of each sample and
    the CA-Jaccard widths (see :func:`unreid.cluster.ca_jaccard_distance`).

    Attributes:
        camids: (N,) int camera of each feature row.
        k1_intra, k1_inter: reciprocal widths inside and across cameras.
        k2_intra, k2_inter: rows averaged by the camera-aware query expansion.
    """

    camids: np.ndarray
    k1_intra: int = 5
    k1_inter: int = 20
    k2_intra: int = 2
    k2_inter: int = 4


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
    camera: CameraJaccard | None = None,
) -> np.ndarray:
    """DBSCAN labels of k-reciprocal Jaccard distances (plain, or camera-aware).

    Args:
        features: (N, D) float features (L2-normalised inside).
        k1, k2: Jaccard neighbourhood sizes, ``k2 <= k1 <= N`` (unused with ``camera``,
            whose widths replace them).
        eps: DBSCAN radius in Jaccard distance, in (0, 1].
        min_samples: neighbours (self included) that make a DBSCAN core sample.
        warn: False silences the "all samples are outliers" warning (for callers
            that cluster many small sets and summarise the result themselves).
        knn: the kNN search (``cluster.knn``): auto | exact | faiss (approximate); the
            camera-aware distance always ranks exactly (it searches per camera).
        camera: None = the plain Jaccard distance; else the camera-aware Jaccard
            distance of these camera ids and widths.

    Returns:
        (N,) int64 labels, clusters numbered 0..C-1 by their lowest sample index,
        ``-1`` for outliers.
    """
    if not warn:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return jaccard_dbscan(
                features, k1=k1, k2=k2, eps=eps, min_samples=min_samples, knn=knn,
                camera=camera,
            )
    if camera is None:
        dist = jaccard_distance(features, k1=k1, k2=k2, cutoff=eps, search=knn)  # type: ignore[arg-type]
    else:
        dist = ca_jaccard_distance(
            features, camera.camids, k1_intra=camera.k1_intra, k1_inter=camera.k1_inter,
            k2_intra=camera.k2_intra, k2_inter=camera.k2_inter, cutoff=eps,
        )
    return dbscan(dist, eps, min_samples=min_samples)


def estimate_num_classes(
    features: np.ndarray | torch.Tensor,
    *,
    k1: int,
    k2: int,
    eps: float,
    min_samples: int,
    minimum: int = 2,
    camera: CameraJaccard | None = None,
) -> int:
    """Number of classes of (N, D) ``features``: their Jaccard + DBSCAN clusters (plain, or
    camera-aware with ``camera``), at least ``minimum``.

    ``k1`` and ``k2`` are lowered to fit N (:func:`shrink_k`), so any N >= 1 gives a
    count; finding no cluster at all is no error here (the count is then ``minimum``).
    """
    k1, k2 = shrink_k(k1, k2, int(features.shape[0]))
    labels = jaccard_dbscan(
        features, k1=k1, k2=k2, eps=float(eps), min_samples=int(min_samples), warn=False,
        camera=camera,
    )
    return max(int(minimum), num_clusters(labels))
