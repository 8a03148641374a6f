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
classifier at temperature ``method.temperature`` (see :func:`centre_init_scale`).
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
(:func:`estimate_num_classes`). That is the density estimate every
clustering-based re-ID method trusts, it follows the features as they improve,
and it is a pure function of the features, so a resumed run gets the same M.
The paper fixes M near the true identity count (750 on Market-1501, 700 on
DukeMTMC-reID; configs/rsl_*.yaml).

Without camera labels the per-camera k-means is one k-means over all images.

:class:`ClassifierMethod` (the FC head, the smoothed cross entropy, the random
sampler) is shared with PUL (:mod:`unreid.methods.pul`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unreid.cluster import reliable_soft_labels
from unreid.config import ClusterConfig, Config
from unreid.losses import cross_entropy_smooth, soft_cross_entropy
from unreid.methods.base import (
    BatchSampler,
    Gather,
    LabelInputs,
    Method,
    PseudoLabels,
    identity_gather,
)
from unreid.methods.cluster_contrast import jaccard_dbscan
from unreid.methods.registry import register_method

__all__ = [
    "RSL",
    "ClassifierMethod",
    "centre_init_scale",
    "class_centres",
    "estimate_num_classes",
    "round_seed",
]


def estimate_num_classes(features: torch.Tensor, cluster: ClusterConfig) -> int:
    """Number of classes when ``cluster.num_classes`` is 0: Jaccard + DBSCAN clusters.

    Uses ``cluster.k1`` (capped at N), ``k2``, ``eps`` and ``min_samples`` on the
    (N, D) features; at least 2 (a one-class classifier learns nothing).
    """
    n = int(features.shape[0])
    k1 = min(int(cluster.k1), n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "all outliers" just means few classes
        labels = jaccard_dbscan(
            features, k1=k1, k2=min(int(cluster.k2), k1), eps=float(cluster.eps),
            min_samples=int(cluster.min_samples),
        )
    found = int(labels.max()) + 1 if (labels >= 0).any() else 0
    return max(2, found)


def round_seed(seed: int, epoch: int) -> int:
    """The clustering seed of ``epoch``: an independent stream per (``cluster.seed``, epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def class_centres(features: torch.Tensor, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """(C, D) L2-normalised mean of the L2-normalised features of each class.

    Samples labelled -1 are ignored; a class without members gets a zero row.
    The result is on the features' device, float32.
    """
    feats = F.normalize(features.float(), dim=1)
    lab = torch.as_tensor(np.asarray(labels), device=feats.device).long().reshape(-1)
    keep = lab >= 0
    sums = torch.zeros(num_classes, feats.shape[1], device=feats.device)
    sums.index_add_(0, lab[keep], feats[keep])
    return F.normalize(sums, dim=1)  # a zero row stays zero


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
    # RSL and PUL cluster, select (cosine > lambda) and classify pool5 features: their
    # thresholds assume non-negative pooled vectors, whose cosines are far higher than
    # those of the zero-mean BN-neck output (on which no sample passes 0.85).
    feature: ClassVar[str] = "pool"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._targets: torch.Tensor | None = None

    def num_classes_for(self, inputs: LabelInputs) -> tuple[int, bool]:
        """``(cluster.num_classes, False)``, or ``(estimate, True)`` when it is 0."""
        num = int(self.cfg.cluster.num_classes)
        if num > 0:
            return num, False
        return estimate_num_classes(inputs.features, self.cfg.cluster), True

    def min_selected_count(self, num_samples: int) -> int:
        """``cluster.min_selected`` (a share) as the sample count the selection keeps at
        least (:func:`unreid.cluster.selection.select_above`)."""
        return math.ceil(float(self.cfg.cluster.min_selected) * int(num_samples))

    def init_scale(self, feature_dim: int) -> float:
        """Factor applied to the unit class centres that initialise the FC
        (:func:`centre_init_scale` at ``method.temperature``)."""
        return centre_init_scale(feature_dim, float(self.cfg.method.temperature))

    def build_head(
        self, model: nn.Module, labels: PseudoLabels, features: torch.Tensor | None
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
        from unreid.data.sampler import RandomBatchSampler

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
        camids = np.asarray(inputs.camids, dtype=np.int64)
        if not inputs.has_cameras:
            camids = np.zeros_like(camids)
        per_camera_k = int(c.per_camera_k) or None
        labels, soft, selected = reliable_soft_labels(
            inputs.features, camids, per_camera_k, num, float(c.lambda_),
            float(c.soft_temperature), seed=round_seed(int(c.seed), inputs.epoch),
            min_keep=self.min_selected_count(len(camids)),
        )
        info = {
            "num_classes": num,
            "num_classes_estimated": estimated,
            "reliable": int(selected.sum()),
            "soft": int((~selected).sum()),
        }
        return PseudoLabels(
            labels, num, soft_index=np.flatnonzero(~selected), soft_targets=soft, info=info
        )

    def train_indices(self, labels: PseudoLabels) -> np.ndarray:
        return np.arange(len(labels.labels))

    def build_head(
        self, model: nn.Module, labels: PseudoLabels, features: torch.Tensor | None
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
