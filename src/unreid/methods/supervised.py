"""Supervised upper bound: the ground-truth training identities as labels.

Same head, sampler and schedule as ``cluster_contrast`` (a cluster memory
initialised to the true identity centroids, InfoNCE, momentum update, P x K
batches), so the gap between the two rows of a table is exactly the cost of
the pseudo-labels, not of a different loss. A label-smoothed classifier
(BoT-style) would be a second variable; the memory head also trains well as
the upper bound (see docs/benchmarks.md for the synthetic-world numbers).

The labels are the same every epoch and do not come from the model, so the
training images are not re-extracted each epoch (``needs_features=False``):
the memory is initialised to the identity centroids once, from the features
before the first epoch, and is then carried across epochs, kept current by its
own momentum update.

Needs a dataset whose training images carry identities (Market layout, the
synthetic world, a folder layout with a pid column).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from unreid.cluster import dense_labels
from unreid.errors import ConfigError
from unreid.losses import ClusterMemory
from unreid.methods.base import LabelInputs, PseudoLabels
from unreid.methods.heads import MemoryMethod
from unreid.methods.registry import register_method

if TYPE_CHECKING:
    from unreid.models import ReIDModel

__all__ = ["Supervised"]


@register_method("supervised")
class Supervised(MemoryMethod):
    supervised = True
    needs_features = False

    def build_head(
        self, model: ReIDModel, labels: PseudoLabels, features: torch.Tensor | None
    ) -> None:
        head = self.head
        if features is None and isinstance(head, ClusterMemory) and \
                head.centroids.shape[0] == labels.num_classes:  # the same identities: keep it
            self._targets = self.device_labels(labels, next(model.parameters()).device)
            return
        super().build_head(model, labels, features)

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        pids = inputs.true_pids
        if pids is None or (np.asarray(pids) < 0).any():
            raise ConfigError(
                "method.name=supervised needs the identity of every training image, but this "
                "dataset's train split has unknown identities (pid -1): use a labelled layout "
                "or an unsupervised method"
            )
        labels, num = dense_labels(pids)
        return PseudoLabels(labels, num)
