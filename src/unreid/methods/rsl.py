"""RSL: reliable hard labels and soft labels from camera-wise k-means; a classifier head.

Each epoch (:func:`unreid.cluster.reliable_soft_labels`):

1. spherical k-means inside each camera into M_k clusters
   (``cluster.per_camera_k``; 0 = M split by each camera's share of the images);
2. keep the samples with cosine similarity > ``cluster.lambda_`` (0.85) to their
   camera-cluster centre;
3. k-means of the kept samples into M classes (``cluster.num_classes``): their
   hard labels are the *reliable* labels, and the M unit centres C the classes;
4. every other sample f gets the *soft* target ``softmax(C f / t)`` with
   ``t = cluster.soft_temperature`` (0.02).

The head is the model's own FC (``model.reset_classifier(M, init)``; the
model's dropout, ``model.dropout``, sits before it), re-created every epoch and
initialised from the M class centres (the normalised means of the reliable
samples' features, i.e. the re-clustering's centres C), scaled to a cosine
classifier at temperature ``method.temperature`` (see
:func:`~unreid.methods.heads.centre_init_scale`).
The trainer gives the new FC to the optimiser's head group. The loss of a
batch is ``ce`` (label-smoothed cross entropy, ``method.label_smoothing``, on
its reliable samples) plus ``soft`` (``method.soft_weight`` x soft cross
entropy on its soft-labelled samples), logged as two terms.

Batches: plain random batches over *all* training samples (both kinds mix in
every batch in proportion to their counts), of ``optim.num_identities x
optim.num_instances`` images (the configs set 4 x 4 = 16, the paper's batch
size); there are no identities to balance in a classification head.

M: ``cluster.num_classes``; 0 estimates it every epoch as the number of
Jaccard + DBSCAN clusters of the epoch's features (cluster-contrast's
clustering, ``cluster.k1``, ``k2``, ``eps``, ``min_samples``), at least 2
(:meth:`unreid.methods.heads.ClassifierMethod.num_classes_for`). That is the density
estimate every clustering-based re-ID method trusts, it follows the features as they
improve, and it is a pure function of the features, so a resumed run gets the same M.
The paper fixes M near the true identity count (750 on Market-1501, 700 on
DukeMTMC-reID; configs/rsl_*.yaml).

Without camera labels the per-camera k-means is one k-means over all images.

The head (the FC, the smoothed cross entropy, the random sampler) is
:class:`~unreid.methods.heads.ClassifierMethod`, shared with PUL (:mod:`unreid.methods.pul`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unreid.cluster import reliable_soft_labels
from unreid.config import Config
from unreid.losses import soft_cross_entropy
from unreid.methods.base import Gather, LabelInputs, PseudoLabels, identity_gather
from unreid.methods.common import camera_ids, round_seed
from unreid.methods.heads import ClassifierMethod
from unreid.methods.registry import register_method

if TYPE_CHECKING:
    from unreid.models import ReIDModel

__all__ = ["RSL"]


@register_method("rsl")
class RSL(ClassifierMethod):
    """Reliable labels (camera-wise k-means selection) + soft labels for the rest."""

    uses_cameras = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._soft_row: torch.Tensor | None = None
        self._soft_targets: torch.Tensor | None = None

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        c = self.cfg.cluster
        num, estimated = self.num_classes_for(inputs)
        camids = camera_ids(inputs)
        per_camera_k = int(c.per_camera_k) or None
        labels, soft, selected, similarity = reliable_soft_labels(
            inputs.require_features(), camids, per_camera_k, num, float(c.lambda_),
            float(c.soft_temperature), seed=round_seed(int(c.seed), inputs.epoch),
            min_keep=self.min_selected_count(len(camids)),
        )
        info = {
            "num_classes": num,
            "num_classes_estimated": estimated,
            "reliable": int(selected.sum()),
            # what lambda alone keeps; below "reliable" when the min_selected floor acted
            "above_lambda": int((similarity > float(c.lambda_)).sum()),
            "soft": int((~selected).sum()),
        }
        return PseudoLabels(
            labels, num, soft_index=np.flatnonzero(~selected), soft_targets=torch.from_numpy(soft),
            info=info,
        )

    def train_indices(self, labels: PseudoLabels) -> np.ndarray:
        return np.arange(len(labels.labels))

    def build_head(
        self, model: ReIDModel, labels: PseudoLabels, features: torch.Tensor | None
    ) -> None:
        super().build_head(model, labels, features)
        device = next(model.parameters()).device
        row = np.full(len(labels.labels), -1, dtype=np.int64)
        if labels.soft_index is not None and len(labels.soft_index):
            row[labels.soft_index] = np.arange(len(labels.soft_index))
            assert labels.soft_targets is not None
            self._soft_targets = labels.soft_targets.to(device)
        else:
            self._soft_targets = torch.zeros(0, int(labels.num_classes), device=device)
        self._soft_row = torch.from_numpy(row).to(device)

    def loss(
        self, out: Any, index: torch.Tensor, gather: Gather = identity_gather
    ) -> dict[str, torch.Tensor]:
        """``ce`` on the reliable samples of the batch + ``soft`` (weighted soft CE) on the rest.

        Each term is a mean over its own samples in the batch (0 when there are none).
        """
        terms = super().loss(out, index, gather)
        assert isinstance(terms, dict) and self._soft_row is not None
        assert self._soft_targets is not None
        logits = self._logits(out)
        rows = self._soft_row[index]
        has = rows >= 0
        soft = soft_cross_entropy(logits[has], self._soft_targets[rows[has]])
        terms["soft"] = float(self.cfg.method.soft_weight) * soft
        return terms
