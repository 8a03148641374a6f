"""Cluster memory: InfoNCE over cluster centroids with a momentum update (cluster-contrast).

Follows ``clustercontrast/models/cm.py`` (Dai et al., "Cluster Contrast for
Unsupervised Person Re-Identification"):

- centroids are the L2-normalised means of each cluster's L2-normalised
  features, rebuilt whenever the pseudo-labels change (every epoch);
- loss = cross entropy of ``f @ C.T / temperature`` against the sample's
  cluster, computed with the centroids as they were *before* this batch (the
  reference updates them in ``backward`` after computing the input gradient);
- then, for every sample of the batch in order, ``c_y <- m c_y + (1 - m) f``
  followed by re-normalisation, with m = 0.2.

The per-sample update is sequential when a label repeats in the batch (K
images of one identity in a PK batch). Updates to *different* centroids
commute, so :meth:`ClusterMemory.update` runs ``max multiplicity`` rounds, each
updating every label's j-th occurrence at once: exactly the reference's loop
result (same arithmetic per row) in K vectorised steps instead of P*K Python
iterations.

Distributed training: each rank holds its own copy of the memory. Pass the
features and targets all-gathered from every rank (in rank order) as
``update_feats`` / ``update_targets``; every rank then applies the identical
update and the copies stay equal without any broadcast.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClusterMemory"]


class ClusterMemory(nn.Module):
    """Contrastive memory of ``num_clusters`` unit centroids (buffer ``centroids``, (C, D)).

    Args:
        num_features: D, the feature dimension.
        num_clusters: C, the number of pseudo-identities (outliers excluded).
        temperature: InfoNCE temperature (cluster-contrast: 0.05).
        momentum: weight of the old centroid in the update (cluster-contrast: 0.2).
    """

    centroids: torch.Tensor

    def __init__(
        self,
        num_features: int,
        num_clusters: int,
        *,
        temperature: float = 0.05,
        momentum: float = 0.2,
    ) -> None:
        super().__init__()
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.num_features = num_features
        self.num_clusters = num_clusters
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("centroids", torch.zeros(num_clusters, num_features))

    @classmethod
    def from_features(
        cls,
        features: torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        *,
        temperature: float = 0.05,
        momentum: float = 0.2,
    ) -> ClusterMemory:
        """A memory with one centroid per label 0..max(labels), initialised from ``features``."""
        labels_t = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
        memory = cls(
            features.shape[1],
            int(labels_t.max()) + 1,
            temperature=temperature,
            momentum=momentum,
        )
        return memory.to(features.device).init_centroids(features, labels_t)

    @torch.no_grad()
    def init_centroids(
        self, features: torch.Tensor, labels: np.ndarray | torch.Tensor
    ) -> ClusterMemory:
        """Set centroid k to the normalised mean of the normalised features labelled k.

        Args:
            features: (N, D) float, any scale (normalised here).
            labels: (N,) int in [-1, C); -1 (outliers) is ignored. Every cluster
                0..C-1 must have at least one member.

        Returns ``self``.
        """
        labels_t = torch.as_tensor(labels, device=features.device).long().reshape(-1)
        if labels_t.shape[0] != features.shape[0]:
            raise ValueError(f"{features.shape[0]} features but {labels_t.shape[0]} labels")
        if features.shape[1] != self.num_features:
            raise ValueError(f"features have {features.shape[1]} dims, memory {self.num_features}")
        keep = labels_t >= 0
        lab = labels_t[keep]
        if lab.numel() and int(lab.max()) >= self.num_clusters:
            raise ValueError(f"label {int(lab.max())} >= num_clusters={self.num_clusters}")
        feats = F.normalize(features[keep].float(), dim=1)
        sums = torch.zeros(self.num_clusters, self.num_features, device=feats.device)
        sums.index_add_(0, lab, feats)
        counts = torch.bincount(lab, minlength=self.num_clusters)
        if (counts == 0).any():
            empty = torch.nonzero(counts == 0).flatten()[:5].tolist()
            raise ValueError(f"clusters {empty} have no member: labels must be 0..C-1, dense")
        # the mean of unit vectors is normalised again, as cluster-contrast does
        self.centroids = F.normalize(sums / counts[:, None], dim=1).to(self.centroids)
        return self

    def forward(
        self,
        feats: torch.Tensor,
        targets: torch.Tensor,
        update_feats: torch.Tensor | None = None,
        update_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """InfoNCE loss of a batch, then (training mode only) the momentum update.

        Args:
            feats: (B, D) features; L2-normalised here (a no-op for ``feat_norm``,
                and what cluster-contrast does too).
            targets: (B,) int64 cluster ids in [0, C); outliers must not be passed.
            update_feats, update_targets: what to update the centroids with; by
                default this batch. Under DDP pass the all-gathered batch.

        Returns:
            scalar loss: mean over the batch of cross entropy of
            ``f @ C.T / temperature``.
        """
        feats = F.normalize(feats, dim=1)
        # The update below replaces the buffer by a new tensor instead of writing
        # into it, so this product keeps the pre-update centroids for backward.
        logits = feats @ self.centroids.t().to(feats.dtype) / self.temperature
        loss = F.cross_entropy(logits.float(), targets)
        if self.training:
            if update_feats is None:
                update_feats, update_targets = feats, targets
            elif update_targets is None:
                raise ValueError("update_feats needs update_targets")
            self.update(update_feats, update_targets)
        return loss

    @torch.no_grad()
    def update(self, feats: torch.Tensor, targets: torch.Tensor) -> None:
        """Per-sample momentum update in batch order: c <- normalize(m c + (1 - m) f).

        Args:
            feats: (B, D) features (normalised here).
            targets: (B,) int64 cluster ids.
        """
        feats = F.normalize(feats.detach().to(self.centroids.dtype), dim=1)
        targets = targets.to(self.centroids.device).long()
        occurrence = _occurrence_index(targets)
        cent = self.centroids.clone()
        m = self.momentum
        for j in range(int(occurrence.max()) + 1 if occurrence.numel() else 0):
            sel = occurrence == j
            idx = targets[sel]  # distinct labels within one round
            new = m * cent[idx] + (1.0 - m) * feats[sel]
            cent[idx] = new / new.norm(dim=1, keepdim=True)
        self.centroids = cent

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, num_clusters={self.num_clusters}, "
            f"temperature={self.temperature}, momentum={self.momentum}"
        )


def _occurrence_index(targets: torch.Tensor) -> torch.Tensor:
    """(B,) j such that sample i is the j-th (0-based) occurrence of its label so far."""
    same = targets[:, None] == targets[None, :]
    earlier = torch.ones_like(same).tril(diagonal=-1)
    return (same & earlier).sum(dim=1)
