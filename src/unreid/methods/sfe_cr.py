"""SFE-CR: semantic foreground extraction + camera-aware re-allocation of DBSCAN clusters.

Each epoch, from the features ``F^x`` of the training images and ``F^g`` of the
same images with the background masked out (``x * mask``, through the same
network; the engine extracts both because ``uses_masks`` is set):

1. global clusters: Jaccard + DBSCAN (``cluster.k1``, ``k2``, ``eps``,
   ``min_samples``, or chosen from the features with ``cluster.auto``) on
   ``method.global_features``: ``input`` (``F^x``, the
   paper), ``foreground`` (``F^g``) or ``fused`` (``normalize(F^x + F^g)``); with
   ``cluster.jaccard=camera_aware`` the camera-aware Jaccard distance (on which
   ``cluster.auto`` then chooses), which can merge views that the re-allocation below
   cannot (:func:`unreid.methods.common.density_labels`);
2. local clusters: plain Jaccard + DBSCAN *inside each camera*
   (:func:`unreid.cluster.camera_local_clusters`, ``cluster.local_eps``,
   ``cluster.local_min_samples``, at step 1's k1 and k2: with ``cluster.auto`` on the
   camera-aware distance, the camera-blind rule's, see
   :class:`unreid.cluster.AutoChoice`) on ``F^g`` (``method.sfe=true``) or on ``F^x``
   (``sfe=false``, the ablation): within one camera background and light are
   shared, so the foreground decides;
3. camera-aware re-allocation (``method.cr=true``):
   :func:`unreid.cluster.reallocate_camera_clusters` with ``cluster.delta``
   pulls every local cluster into the global cluster holding at least
   ``delta`` of it (global outliers join, members of other global clusters
   move); ``cr=false`` keeps the global labels (step 2 is then skipped, and
   ``sfe`` has no effect).

Re-allocation only moves samples within a camera: when the input features are
so camera-dominated that the global clusters follow the cameras (the synthetic
world from a weak model), it cannot merge them across cameras, and the
``foreground`` global features are the ablation that helps (measured in
tests/test_methods_sfe_cr.py).

Labels are renumbered densely and trained exactly as cluster-contrast (cluster
memory on ``F^x``, InfoNCE, P x K batches). The paper uses DBSCAN eps 0.5
(configs/sfe_cr_market1501.yaml); the default ``cluster.eps`` stays
cluster-contrast's 0.6.

Small cameras: the local Jaccard graph needs ``k1`` neighbours per sample, so a
camera with fewer than ``k1`` images is clustered with ``k1`` (and ``k2``)
lowered to its image count; a camera with fewer than
``max(2, cluster.local_min_samples)`` images cannot hold a local cluster of two
or more and all its images are local outliers (they keep their global label).

Without camera labels every image is one camera: the local step is one DBSCAN
over the whole train split at ``local_eps`` (the trainer prints the one-time
note of :meth:`Method.note_no_cameras`).

``PseudoLabels.info`` logs ``global_clusters``, ``global_outliers``,
``local_clusters``, ``local_outliers``, ``moved`` (samples moved from one global
cluster to another), ``joined`` (global outliers that joined a cluster) and
``cameras_without_local_clusters``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from unreid.cluster import (
    camera_local_clusters,
    dense_labels,
    num_clusters,
    reallocate_camera_clusters,
)
from unreid.config import Config
from unreid.errors import ConfigError, TrainingError
from unreid.methods.base import LabelInputs, PseudoLabels
from unreid.methods.common import camera_ids, density_labels, require_clusters
from unreid.methods.heads import MemoryMethod
from unreid.methods.registry import register_method

__all__ = ["GLOBAL_FEATURES", "SFECR", "global_feature_set"]

GLOBAL_FEATURES = ("input", "foreground", "fused")


def global_feature_set(
    name: str, features: torch.Tensor, fg_features: torch.Tensor | None
) -> torch.Tensor:
    """The (N, D) features the global clustering runs on (``method.global_features``).

    Args:
        name: ``input`` (``features``), ``foreground`` (``fg_features``) or ``fused``
            (the L2-normalised sum of both).
        features: (N, D) features of the input images, F^x.
        fg_features: (N, D) features of the foreground images, F^g (needed unless
            ``name`` is ``input``).
    """
    if name == "input":
        return features
    if fg_features is None:
        raise TrainingError(
            f"method.global_features={name} needs foreground features, but none were "
            "extracted (the method must declare uses_masks)"
        )
    if name == "foreground":
        return fg_features
    if name == "fused":
        return F.normalize(features.float() + fg_features.float(), dim=1)
    raise _unknown_global_features(name)


def _unknown_global_features(name: str) -> ConfigError:
    return ConfigError(
        f"method.global_features={name!r} is unknown: use one of {', '.join(GLOBAL_FEATURES)}"
    )


@register_method("sfe_cr")
class SFECR(MemoryMethod):
    """Global DBSCAN labels, corrected per camera with foreground local clusters."""

    uses_masks = True
    uses_cameras = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.global_features = str(cfg.method.global_features)
        if self.global_features not in GLOBAL_FEATURES:
            raise _unknown_global_features(self.global_features)

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        c, m = self.cfg.cluster, self.cfg.method
        feats = global_feature_set(
            self.global_features, inputs.require_features(), inputs.fg_features
        )
        camids = camera_ids(inputs)
        global_labels, params, info = density_labels(self.cfg, feats, camids, inputs.epoch)
        info.update({
            "global_clusters": num_clusters(global_labels),
            "global_outliers": int((global_labels < 0).sum()),
        })
        labels = global_labels
        if bool(m.cr):
            local_feats = inputs.require_features()
            if bool(m.sfe):
                if inputs.fg_features is None:
                    raise TrainingError(
                        "method.sfe=true needs foreground features, but none were extracted "
                        "(set masks.provider, or method.sfe=false)"
                    )
                local_feats = inputs.fg_features
            local, local_info = camera_local_clusters(
                local_feats, camids, k1=params["k1"], k2=params["k2"], eps=c.local_eps,
                min_samples=c.local_min_samples,
            )
            info.update(local_info)
            if local_info["local_clusters"] == 0:
                warnings.warn(
                    f"sfe_cr: no camera has a local cluster at cluster.local_eps={c.local_eps}, "
                    f"local_min_samples={c.local_min_samples}: nothing is re-allocated; raise "
                    "cluster.local_eps",
                    UserWarning,
                    stacklevel=2,
                )
            labels = reallocate_camera_clusters(global_labels, local, camids, delta=float(c.delta))
            info["moved"] = int(((global_labels >= 0) & (labels != global_labels)).sum())
            info["joined"] = int(((global_labels < 0) & (labels >= 0)).sum())
        labels, num = dense_labels(labels)
        require_clusters(labels, inputs.epoch, knob="cluster.eps", value=params["eps"])
        return PseudoLabels(labels, num, info=info)
