"""Cluster-contrast (Dai et al. 2021): Jaccard + DBSCAN pseudo-labels, InfoNCE cluster memory.

Each epoch: k-reciprocal Jaccard distances of the features (k1=30, k2=6),
DBSCAN (``cluster.eps``, ``cluster.min_samples`` = 4; with ``cluster.auto`` the knobs
are chosen from the epoch's features), outliers dropped from training; with
``cluster.jaccard=camera_aware`` the camera-aware Jaccard distance, on which
``cluster.auto`` then chooses (:func:`unreid.methods.common.density_labels`). The
memory holds one L2-normalised centroid per cluster, re-initialised to the cluster
means, and trains with InfoNCE at temperature 0.05 and a momentum-0.2 update per
sample; batches are P clusters x K images (:class:`unreid.methods.heads.MemoryMethod`).
"""

from __future__ import annotations

# dense_labels is re-exported for supervised.py, which still imports it from here.
from unreid.cluster import dense_labels, jaccard_dbscan  # noqa: F401
from unreid.methods.base import LabelInputs, PseudoLabels
from unreid.methods.common import camera_ids, density_labels, require_clusters
from unreid.methods.heads import MemoryMethod
from unreid.methods.registry import register_method

__all__ = ["ClusterContrast"]


@register_method("cluster_contrast")
class ClusterContrast(MemoryMethod):
    """Labels from Jaccard + DBSCAN on the input images' features."""

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        feats = inputs.require_features()
        labels, params, info = density_labels(self.cfg, feats, camera_ids(inputs), inputs.epoch)
        num = require_clusters(labels, inputs.epoch, knob="cluster.eps", value=params["eps"])
        return PseudoLabels(labels, num, info=info)
