"""What a training method is, in one small interface.

A method answers the questions the engine asks once per epoch and once per
step; the engine never knows which method runs:

1. ``make_labels(LabelInputs) -> PseudoLabels``: from this epoch's features
   (and foreground features when ``uses_masks``) to labels, ``-1`` for the
   samples not trained as a class (outliers, unselected samples), plus
   optional soft targets. Runs on rank 0 only; the engine broadcasts the result.
2. ``build_head(model, labels, features)``: the epoch's loss head, re-made
   from the new labels: a cluster memory initialised to the cluster means, or
   the model's classifier via ``model.reset_classifier(num_classes, init)``.
3. ``sampler(labels, seed=..., rank=..., world_size=...)``: the batch sampler
   of the epoch (``next_batch() -> (B,) int64 dataset indices``).
4. ``loss(out, index, gather)``: the loss of one batch from the model's
   :class:`ModelOutput` and the batch's dataset indices, either one scalar or
   a dict of named scalar terms (the engine sums them and logs each).

Class attributes declare what a method needs: ``uses_masks`` (the engine then
also extracts foreground features ``x * mask``), ``uses_cameras`` (printed once
when the data has none), ``supervised`` (only then does the engine pass the
ground-truth identities; unsupervised methods never see them),
``needs_features`` (False when the labels do not come from the model, e.g.
ground truth: the engine then extracts the training features only while
:meth:`Method.wants_features` says so, and passes ``features=None`` otherwise).

A new method is one file in ``unreid/methods/`` with a class decorated by
``@register_method("name")`` (see :mod:`unreid.methods.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from unreid.config import Config
from unreid.data.sampler import PKSampler

if TYPE_CHECKING:
    from unreid.models import ReIDModel

__all__ = ["BatchSampler", "LabelInputs", "Method", "PseudoLabels", "identity_gather"]

Gather = Callable[[torch.Tensor], torch.Tensor]


def identity_gather(x: torch.Tensor) -> torch.Tensor:
    """The single-process ``gather``: the batch itself."""
    return x


class BatchSampler(Protocol):
    """What the engine needs from a sampler (see :mod:`unreid.data.sampler`)."""

    def next_batch(self) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class LabelInputs:
    """Everything a method may use to make the epoch's labels.

    Attributes:
        features: (N, D) float32 CPU tensor, L2-normalised features of the
            training images (model in eval mode, no augmentation); None when
            the method did not want them this epoch (``needs_features=False``).
        fg_features: (N, D) like ``features`` but of the foreground images
            ``x * mask``; None unless the method ``uses_masks``.
        camids: (N,) int64 camera of each image (all 0 without cameras).
        has_cameras: False when the layout has no camera labels.
        true_pids: (N,) int64 ground-truth identities; only for ``supervised``
            methods, None otherwise.
        epoch: 0-based index of the epoch about to be trained.
    """

    features: torch.Tensor | None
    camids: np.ndarray
    has_cameras: bool
    epoch: int
    fg_features: torch.Tensor | None = None
    true_pids: np.ndarray | None = None

    def require_features(self) -> torch.Tensor:
        """``features`` (N, D) for a method whose labels come from them."""
        if self.features is None:
            raise RuntimeError("features were not extracted: the method must keep "
                               "needs_features=True to make labels from them")
        return self.features


@dataclass
class PseudoLabels:
    """The labels of one epoch.

    Attributes:
        labels: (N,) int64 in [-1, num_classes); -1 = not a training class
            (outlier or unselected).
        num_classes: number of classes (clusters) of the head.
        soft_index: (S,) int64 dataset indices of the samples that have soft
            targets (e.g. RSL's unselected samples), or None.
        soft_targets: (S, num_classes) float32 rows summing to 1, or None.
        info: small JSON-able numbers for the epoch log (e.g. ``eps``).
    """

    labels: np.ndarray
    num_classes: int
    soft_index: np.ndarray | None = None
    soft_targets: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.soft_index is not None:
            self.soft_index = np.asarray(self.soft_index, dtype=np.int64).reshape(-1)
        if self.soft_targets is not None:
            self.soft_targets = torch.as_tensor(self.soft_targets, dtype=torch.float32)

    @property
    def num_outliers(self) -> int:
        return int((self.labels < 0).sum())

    def state_dict(self) -> dict[str, Any]:
        """Tensors, ints and plain dicts only (``torch.load(weights_only=True)``)."""
        return {
            "labels": torch.from_numpy(self.labels.copy()),
            "num_classes": int(self.num_classes),
            "soft_index": None if self.soft_index is None else torch.from_numpy(self.soft_index),
            "soft_targets": self.soft_targets,
            "info": dict(self.info),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PseudoLabels:
        soft_index = state.get("soft_index")
        return cls(
            labels=state["labels"].numpy(),
            num_classes=int(state["num_classes"]),
            soft_index=None if soft_index is None else soft_index.numpy(),
            soft_targets=state.get("soft_targets"),
            info=dict(state.get("info") or {}),
        )


class Method:
    """Base class; subclasses override :meth:`make_labels`, :meth:`build_head`, :meth:`loss`.

    Args:
        cfg: the resolved run config (methods read ``cfg.method``,
            ``cfg.cluster``, ``cfg.optim``).

    The head built by :meth:`build_head` lives in ``self.head`` (an
    ``nn.Module`` or None when the model's own classifier is the head); its
    state is saved in checkpoints by :meth:`state_dict`.
    """

    name: ClassVar[str] = ""
    feature: ClassVar[str] = "bn"  # the model's retrieval vector when model.feature=auto
    uses_masks: ClassVar[bool] = False
    uses_cameras: ClassVar[bool] = False
    supervised: ClassVar[bool] = False
    needs_features: ClassVar[bool] = True  # make_labels reads this epoch's features
    # how the labels are made, for the label-health advice (unreid.cluster.health): density
    # clustering (Jaccard + DBSCAN) or kmeans with a selection
    labeller: ClassVar[str] = "density"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.head: nn.Module | None = None
        self._camera_note_done = False

    # ------------------------------------------------------------ declarations

    @property
    def augment(self) -> str:
        """Name of the training augmentation preset (``unreid.data.augment``)."""
        return str(self.cfg.method.augment)

    # ------------------------------------------------------------ per epoch

    def wants_features(self) -> bool:
        """Whether this epoch's label stage extracts the training images' features: always
        when the labels come from them, else only until the head is built (a head
        initialised from features, e.g. class centroids, is then kept across epochs)."""
        return self.needs_features or self.head is None

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        raise NotImplementedError

    def build_head(
        self, model: ReIDModel, labels: PseudoLabels, features: torch.Tensor | None
    ) -> None:
        """(Re)build the loss head for ``labels``.

        Args:
            model: the bare model (not DDP-wrapped), on the training device.
            labels: this epoch's labels.
            features: (N, D) features the labels were made from, on the
                training device; None when resuming mid-epoch (the head's
                state is then loaded from the checkpoint right after).
        """
        raise NotImplementedError

    def sampler(
        self, labels: PseudoLabels, *, seed: int, rank: int = 0, world_size: int = 1
    ) -> BatchSampler:
        """The epoch's batch sampler; default: P x K over the labels (outliers never drawn)."""
        return PKSampler(
            labels.labels,
            self.cfg.optim.num_identities,
            self.cfg.optim.num_instances,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    # ------------------------------------------------------------ per step

    def loss(
        self, out: Any, index: torch.Tensor, gather: Gather = identity_gather
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            out: the model's train-mode ``ModelOutput`` (feat_bn, feat_norm, logits).
            index: (B,) int64 dataset indices of the batch, on the training device.
            gather: concatenates a tensor across DDP ranks in rank order (the
                identity in a single process); for memory updates with every
                rank's batch.
        """
        raise NotImplementedError

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The head's tensors (the model's classifier is saved with the model)."""
        return {} if self.head is None else {"head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.head is not None and "head" in state:
            self.head.load_state_dict(state["head"])

    # ------------------------------------------------------------ helpers

    def note_no_cameras(self, has_cameras: bool) -> None:
        """Print once that a camera-aware method runs on data without cameras."""
        if self.uses_cameras and not has_cameras and not self._camera_note_done:
            self._camera_note_done = True
            print(
                f"note: method {self.name} uses camera labels but this dataset has none: "
                "every image is treated as one camera"
            )

    @staticmethod
    def device_labels(labels: PseudoLabels, device: torch.device | str) -> torch.Tensor:
        """(N,) int64 labels on ``device``: look-up table from dataset index to target."""
        return torch.from_numpy(labels.labels).to(device)
