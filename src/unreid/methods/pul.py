"""PUL (Fan et al. 2018, "Unsupervised person re-identification: clustering and fine-tuning").

The RSL paper's baseline. Each round (one round = one epoch here):

1. spherical k-means of all training features into K clusters
   (``cluster.num_classes``; 0 = the density clusters' count,
   :meth:`unreid.methods.heads.ClassifierMethod.num_classes_for`);
2. keep the samples whose cosine similarity to their cluster centre is greater
   than lambda (:func:`unreid.cluster.pul_select`);
3. fine-tune a classifier (the model's FC, dropout ``model.dropout`` before it;
   PUL uses 0.5) with label-smoothed cross entropy on the kept samples only, in
   random batches of ``optim.num_identities x optim.num_instances`` images drawn
   from them (PUL: 16). The FC starts from the kept samples' class centres, as
   RSL's (:func:`~unreid.methods.heads.centre_init_scale`), not from PUL's
   ``RandomNormal(stddev=0.001)``: PUL trains its fresh FC for 20 passes over the
   selection each round, whereas a round here is one epoch of ``optim.iters``
   steps, too few for a random FC to leave chance level (measured on the tiny
   synthetic world: the loss stayed at log K for 8 epochs of 20 steps).

Self-paced growth: lambda of 0-based epoch e is
``min(cluster.lambda_ + e * cluster.lambda_step, LAMBDA_CAP)``. The cap
(0.99) stays below 1 because no sample has cosine similarity above 1: at
lambda = 1 nothing would be selected. PUL's released script keeps lambda at
0.85 (``cluster.lambda_step=0``); the paper's self-paced view lets it grow as the
model gets stronger and the clusters tighter.

Labels are renumbered densely over the clusters that kept a sample, so the
classifier has one output per trained class (K may shrink in the log as
``num_classes``; ``k`` is the k-means K). Differences from PUL's script: the
network continues from the previous round instead of restarting from the
initial model, a round is one epoch of ``optim.iters`` steps rather than 20
passes over the selection, and the FC's start (above).

Camera labels are not used.
"""

from __future__ import annotations

from typing import Any

from unreid.cluster import dense_labels, pul_select
from unreid.methods.base import LabelInputs, PseudoLabels
from unreid.methods.common import round_seed
from unreid.methods.heads import ClassifierMethod
from unreid.methods.registry import register_method

__all__ = ["LAMBDA_CAP", "PUL", "pul_lambda"]

LAMBDA_CAP = 0.99


def pul_lambda(lambda_: float, step: float, epoch: int) -> float:
    """Selection threshold of 0-based ``epoch``: ``min(lambda_ + epoch * step, LAMBDA_CAP)``."""
    return min(float(lambda_) + int(epoch) * float(step), LAMBDA_CAP)


@register_method("pul")
class PUL(ClassifierMethod):
    """Global k-means, keep samples near their centre, fine-tune a classifier on them."""

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        c = self.cfg.cluster
        k, estimated = self.num_classes_for(inputs)
        lam = pul_lambda(c.lambda_, c.lambda_step, inputs.epoch)
        raw, _, selected, similarity = pul_select(
            inputs.require_features(), k, lam, seed=round_seed(int(c.seed), inputs.epoch),
            min_keep=self.min_selected_count(inputs.require_features().shape[0]),
        )
        labels, num = dense_labels(raw)
        info: dict[str, Any] = {
            "lambda": lam,
            "k": k,
            "num_classes_estimated": estimated,
            "selected": int(selected.sum()),
            # what lambda alone keeps; below "selected" when the min_selected floor acted
            "above_lambda": int((similarity > lam).sum()),
        }
        return PseudoLabels(labels, num, info=info)
