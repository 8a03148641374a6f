"""Bookkeeping of cluster labels: dense ids, cluster counts, class centres.

Labels here are (N,) integer arrays with ``-1`` for samples in no cluster
(outliers, unselected samples) and ids ``>= 0`` for clusters.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["class_centres", "dense_labels", "num_clusters"]


def dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber cluster ids to 0..C-1 in increasing order of the old id (``-1`` stays ``-1``).

    Args:
        labels: (N,) int, any ids ``>= 0`` for clusters, ``-1`` (any negative) for none.

    Returns:
        (labels (N,) int64 in [-1, C), C = number of distinct ids ``>= 0``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    keep = labels >= 0
    ids, inverse = np.unique(labels[keep], return_inverse=True)
    out[keep] = inverse
    return out, len(ids)


def num_clusters(labels: np.ndarray) -> int:
    """Number of distinct cluster ids ``>= 0`` in (N,) int ``labels`` (0 when all are ``-1``)."""
    labels = np.asarray(labels).reshape(-1)
    return len(np.unique(labels[labels >= 0]))


def class_centres(features: torch.Tensor, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """(C, D) L2-normalised mean of the L2-normalised features of each class.

    Args:
        features: (N, D) float, any scale (L2-normalised here).
        labels: (N,) int in [-1, C); ``-1`` samples are ignored.
        num_classes: C.

    Returns:
        (C, D) float32 on the features' device; a class without members gets a zero row.
    """
    feats = F.normalize(features.float(), dim=1)
    lab = torch.as_tensor(np.asarray(labels), device=feats.device).long().reshape(-1)
    keep = lab >= 0
    sums = torch.zeros(num_classes, feats.shape[1], device=feats.device)
    sums.index_add_(0, lab[keep], feats[keep])
    return F.normalize(sums, dim=1)  # a zero row stays zero
