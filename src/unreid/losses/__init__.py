"""Losses: the cluster-contrast memory (InfoNCE over centroids) and classification losses."""

from unreid.losses.classification import cross_entropy_smooth, soft_cross_entropy
from unreid.losses.memory import ClusterMemory

__all__ = ["ClusterMemory", "cross_entropy_smooth", "soft_cross_entropy"]
