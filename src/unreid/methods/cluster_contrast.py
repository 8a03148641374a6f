"""Cluster-contrast (Dai et al. 2021): Jaccard + DBSCAN pseudo-labels, InfoNCE cluster memory.

Each epoch: k-reciprocal Jaccard distances of the features (k1=30, k2=6),
DBSCAN (``cluster.eps``, ``cluster.min_samples`` = 4), outliers dropped from
training; the memory holds one L2-normalised centroid per cluster,
re-initialised to the cluster means, and trains with InfoNCE at temperature
0.05 and a momentum-0.2 update per sample; batches are P clusters x K images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unreid.config import Config
from unreid.errors import TrainingError
from unreid.losses import ClusterMemory
from unreid.methods.base import (
    Gather,
    LabelInputs,
    Method,
    PseudoLabels,
    identity_gather,
)
from unreid.methods.registry import register_method

__all__ = ["ClusterContrast", "MemoryMethod", "dense_labels", "jaccard_dbscan"]


def dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber labels to 0..C-1 in order of first value (``-1`` stays ``-1``).

    Returns:
        (labels (N,) int64, C).
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    keep = labels >= 0
    ids, inverse = np.unique(labels[keep], return_inverse=True)
    out[keep] = inverse
    return out, len(ids)


def jaccard_dbscan(
    features: torch.Tensor, *, k1: int, k2: int, eps: float, min_samples: int
) -> np.ndarray:
    """Cluster-contrast's labels: (N,) int64, dense 0..C-1, ``-1`` for outliers.

    The Jaccard graph keeps only pairs closer than ``eps`` (nothing N x N is built).
    """
    from unreid.cluster import dbscan, jaccard_distance

    dist = jaccard_distance(features, k1=k1, k2=k2, cutoff=eps)
    return dense_labels(dbscan(dist, eps, min_samples=min_samples))[0]


def require_clusters(labels: np.ndarray, epoch: int, *, knob: str, value: float) -> int:
    """Number of clusters; a one-line TrainingError naming ``knob`` when there is none."""
    num = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    if num == 0:
        raise TrainingError(
            f"clustering at epoch {epoch + 1} found no cluster: all {labels.size} training "
            f"images are outliers at {knob}={value}; raise {knob} (or lower "
            "cluster.min_samples)"
        )
    return num


class MemoryMethod(Method):
    """Shared head of every cluster-memory method: InfoNCE over class centroids.

    Subclasses only decide the labels (:meth:`make_labels`).
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._targets: torch.Tensor | None = None

    def build_head(
        self, model: nn.Module, labels: PseudoLabels, features: torch.Tensor | None
    ) -> None:
        device = next(model.parameters()).device
        memory = ClusterMemory(
            int(model.feature_dim),
            labels.num_classes,
            temperature=self.cfg.method.temperature,
            momentum=self.cfg.method.momentum,
        ).to(device)
        if features is not None:
            memory.init_centroids(features.to(device), torch.from_numpy(labels.labels))
        self.head = memory
        self._targets = self.device_labels(labels, device)

    def loss(
        self, out, index: torch.Tensor, gather: Gather = identity_gather
    ) -> torch.Tensor:
        assert self.head is not None and self._targets is not None, "build_head first"
        feats = out.feat_norm
        targets = self._targets[index]
        # Every rank updates its memory copy with all ranks' samples, in rank order,
        # so the copies stay identical without a broadcast.
        return self.head(feats, targets, gather(feats.detach()), gather(targets))


@register_method("cluster_contrast")
class ClusterContrast(MemoryMethod):
    """Labels from Jaccard + DBSCAN on the input images' features."""

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        c = self.cfg.cluster
        labels = jaccard_dbscan(
            inputs.features, k1=c.k1, k2=c.k2, eps=c.eps, min_samples=c.min_samples
        )
        num = require_clusters(labels, inputs.epoch, knob="cluster.eps", value=c.eps)
        return PseudoLabels(labels, num)
