"""The two loss heads methods train with, as bases a concrete method subclasses.

- :class:`MemoryMethod`: a cluster memory (one L2-normalised centroid per
  class, InfoNCE, momentum update), re-initialised to the class means every
  epoch; P x K batches (cluster-contrast, SFE-CR, the supervised bound).
- :class:`ClassifierMethod`: the model's own FC re-made every epoch with one
  output per class, started from the scaled class centres; label-smoothed cross
  entropy over random batches (RSL, PUL).

A subclass decides the labels (:meth:`~unreid.methods.base.Method.make_labels`)
and may extend the loss; the head, its state and the sampler come from here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from unreid.cluster import class_centres, num_clusters
from unreid.config import Config
from unreid.data.sampler import RandomBatchSampler
from unreid.losses import ClusterMemory, cross_entropy_smooth
from unreid.methods.base import (
    BatchSampler,
    Gather,
    LabelInputs,
    Method,
    PseudoLabels,
    identity_gather,
)
from unreid.methods.common import camera_ids, density_labels

if TYPE_CHECKING:
    from unreid.models import ReIDModel

__all__ = ["ClassifierMethod", "MemoryMethod", "centre_init_scale"]


class MemoryMethod(Method):
    """Shared head of every cluster-memory method: InfoNCE over class centroids.

    Subclasses only decide the labels (:meth:`make_labels`).
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._targets: torch.Tensor | None = None

    def build_head(
        self, model: ReIDModel, labels: PseudoLabels, features: torch.Tensor | None
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
        self, out: Any, index: torch.Tensor, gather: Gather = identity_gather
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """InfoNCE of the batch's features against the class centroids (every sample of a
        batch is labelled: the P x K sampler never draws an outlier)."""
        assert self.head is not None and self._targets is not None, "build_head first"
        feats = out.feat_norm
        targets = self._targets[index]
        # Every rank updates its memory copy with all ranks' samples, in rank order,
        # so the copies stay identical without a broadcast.
        return self.head(feats, targets, gather(feats.detach()), gather(targets))


def centre_init_scale(feature_dim: int, temperature: float) -> float:
    """Scale of the unit class centres used as the initial FC weights: ``1 / (t sqrt(D))``.

    The FC acts on the BN-neck output ``feat_bn``, not on unit features. The BN
    neck has unit weight and zero bias, so each of its D outputs has about unit
    variance and ``||feat_bn|| ~ sqrt(D)``. With weights ``C / (t sqrt(D))`` the
    initial logits are about ``C f / t``: a cosine classifier at temperature t
    over the class centres, whatever the backbone's width.

    The methods pass ``t = method.temperature`` (0.05, the cluster memory's InfoNCE
    temperature): the new classifier starts where cluster-contrast's memory starts
    each epoch. For ResNet-50 (D = 2048) the scale is 0.44. RSL's soft-target
    temperature (0.02) would start it much sharper (measured on the tiny world:
    a confidently wrong start on augmented, dropped-out training features and
    a loss far above chance in the epochs after the first); BoT's N(0, 0.001^2)
    start needs far more steps than one epoch to leave chance level (PUL trains
    20 passes per round; measured: the loss stays at log K for 8 epochs of 20 steps).
    """
    return 1.0 / (float(temperature) * math.sqrt(float(feature_dim)))


class ClassifierMethod(Method):
    """Shared head of the classification methods: the model's FC re-made every epoch.

    Subclasses decide the labels (:meth:`make_labels`) and may set
    ``init_from_centres`` (FC weights from the class centres, the default; else
    BoT's N(0, 0.001^2)), override :meth:`train_indices` (the samples batches are drawn
    from) and extend :meth:`loss`.
    """

    init_from_centres: ClassVar[bool] = True
    labeller: ClassVar[str] = "kmeans"  # k-means classes and a cosine selection (RSL, PUL)
    # RSL and PUL cluster, select (cosine > lambda) and classify pool5 features: their
    # thresholds assume non-negative pooled vectors, whose cosines are far higher than
    # those of the zero-mean BN-neck output (on which no sample passes 0.85).
    feature: ClassVar[str] = "pool"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._targets: torch.Tensor | None = None

    def num_classes_for(self, inputs: LabelInputs) -> tuple[int, bool]:
        """``(cluster.num_classes, False)``, or ``(estimate, True)`` when it is 0.

        The estimate is the number of Jaccard + DBSCAN clusters of the epoch's
        features (:func:`unreid.methods.common.density_labels`: at ``cluster.k1``,
        ``k2``, ``eps``, ``min_samples``, k1 and k2 lowered to fit a small set, or chosen
        from the features with ``cluster.auto``; camera-aware with
        ``cluster.jaccard=camera_aware``), at least 2 (a one-class classifier learns
        nothing), as :func:`unreid.cluster.estimate_num_classes` counts them. Only the
        count is used: the classes themselves are k-means'.
        """
        num = int(self.cfg.cluster.num_classes)
        if num > 0:
            return num, False
        labels, _, _ = density_labels(self.cfg, inputs.require_features(), camera_ids(inputs),
                                      inputs.epoch, fit_k=True, warn=False)
        return max(2, num_clusters(labels)), True

    def min_selected_count(self, num_samples: int) -> int:
        """``cluster.min_selected`` (a share) as the sample count the selection keeps at
        least (:func:`unreid.cluster.selection.select_above`)."""
        return math.ceil(float(self.cfg.cluster.min_selected) * int(num_samples))

    def init_scale(self, feature_dim: int) -> float:
        """Factor applied to the unit class centres that initialise the FC
        (:func:`centre_init_scale` at ``method.temperature``)."""
        return centre_init_scale(feature_dim, float(self.cfg.method.temperature))

    def build_head(
        self, model: ReIDModel, labels: PseudoLabels, features: torch.Tensor | None
    ) -> None:
        device = next(model.parameters()).device
        num = int(labels.num_classes)
        # Resuming mid-epoch (features None): the trainer has just loaded this epoch's FC.
        resumed = features is None and int(model.num_classes) == num
        if not resumed:
            init = None
            if self.init_from_centres and features is not None:
                centres = class_centres(features.to(device), labels.labels, num)
                init = centres * self.init_scale(int(model.feature_dim))
            model.reset_classifier(num, init)
        self.head = None  # the FC is part of the model (saved with it)
        self._targets = self.device_labels(labels, device)

    def train_indices(self, labels: PseudoLabels) -> np.ndarray:
        """Dataset indices the batches are drawn from (default: the labelled samples)."""
        return np.flatnonzero(labels.labels >= 0)

    def sampler(
        self, labels: PseudoLabels, *, seed: int, rank: int = 0, world_size: int = 1
    ) -> BatchSampler:
        """Random batches of ``optim.num_identities x optim.num_instances`` over
        :meth:`train_indices`."""
        o = self.cfg.optim
        return RandomBatchSampler(
            self.train_indices(labels),
            int(o.num_identities) * int(o.num_instances),
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    def _logits(self, out: Any) -> torch.Tensor:
        if out.logits is None:
            raise RuntimeError(f"method {self.name}: the model has no classifier; build_head first")
        return out.logits

    def loss(
        self, out: Any, index: torch.Tensor, gather: Gather = identity_gather
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """``{"ce": label-smoothed cross entropy over the batch's labelled samples}``."""
        assert self._targets is not None, "build_head first"
        logits = self._logits(out)
        targets = self._targets[index]
        ce = cross_entropy_smooth(logits, targets, float(self.cfg.method.label_smoothing))
        return {"ce": ce}
