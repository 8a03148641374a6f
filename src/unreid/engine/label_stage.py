"""The label stage of an epoch: features -> labels (rank 0) -> broadcast -> head -> sampler.

1. extract L2-normalised features of every training image (eval mode, no
   augmentation; foreground features ``x * mask`` too when the method
   ``uses_masks``); under DDP each rank extracts a shard, then all gather.
   Skipped when the method does not want them (:meth:`Method.wants_features`:
   labels that do not come from the model, e.g. ground truth, once its head
   exists);
2. the method makes the epoch's labels on rank 0; they are broadcast (an
   exception on rank 0 is broadcast too, so every rank stops);
3. the method rebuilds its head (cluster memory, or the model's classifier),
   whose parameters become the optimiser's head group (group 1, fresh state),
   and the model is (re)wrapped for DDP;
4. the method's sampler of the epoch, seeded by ``(run.seed, epoch)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from unreid.cluster import cross_camera_nn_share, label_quality
from unreid.config import Config
from unreid.engine import distributed as ddp
from unreid.engine.loop import EpochStats, derive_seed
from unreid.engine.train_data import TrainData
from unreid.errors import TrainingError
from unreid.methods import LabelInputs, Method, PseudoLabels
from unreid.methods.base import BatchSampler
from unreid.models.camera_bn import BNStatistics

if TYPE_CHECKING:
    from unreid.models import ReIDModel

__all__ = ["EpochLabels", "LabelStage", "check_finite"]

SAMPLER_STREAM = 1  # derive_seed tag of the samplers' seeds


class ExtractSets(Protocol):
    """(images, mask sets: None for the plain images) -> one (N, D) CPU feature set each;
    with ``camids`` and ``camera_stats``, camera-specific BN statistics
    (:meth:`unreid.engine.trainer.Trainer.extract`)."""

    def __call__(self, images: np.ndarray, mask_sets: Sequence[np.ndarray | None], *,
                 camids: np.ndarray | None = None,
                 camera_stats: Mapping[int, BNStatistics] | None = None,
                 ) -> list[torch.Tensor]: ...


# (images, camids) sets -> {camera: BN statistics} (Trainer.camera_statistics)
CameraStatistics = Callable[[Sequence[tuple[np.ndarray, np.ndarray]]], dict[int, BNStatistics]]


@dataclass
class EpochLabels:
    """What the label stage hands the steps: the labels, their sampler, the net to train
    (the model, or its DDP wrapper)."""

    labels: PseudoLabels
    sampler: BatchSampler
    net: nn.Module


def check_finite(x: torch.Tensor, what: str, last_good: Path) -> None:
    """One-line :class:`TrainingError` when ``x`` holds NaN/inf (``what`` names it)."""
    if not torch.isfinite(x).all():
        raise TrainingError(
            f"{what} contain NaN/inf: the model diverged; lower optim.lr (the last good "
            f"checkpoint is {last_good})"
        )


class LabelStage:
    """Makes each epoch's labels, head and sampler; see the module docstring.

    Args:
        method: the run's method.
        data: the training data.
        model: the bare model (its parameters at construction are the "base"
            ones; anything added later is the head).
        optimizer: group 0 the model's parameters, group 1 the head's.
        cfg: resolved config.
        info: DDP position.
        device: training device.
        extract: ``(images, mask sets) -> [(N, D), ...]`` CPU features of all images,
            one set per entry (``None``: the plain images), from one read of the images.
        camera_statistics: camera-specific BN statistics of ``(images, camids)`` sets, used
            with ``camera.bn`` (the features to cluster are then extracted with each
            camera's own statistics).
        last_good: the checkpoint named when features turn non-finite.
    """

    def __init__(
        self,
        method: Method,
        data: TrainData,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        cfg: Config,
        info: ddp.DistInfo,
        device: torch.device,
        extract: ExtractSets,
        camera_statistics: CameraStatistics,
        last_good: Path,
    ) -> None:
        self.method = method
        self.data = data
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.info = info
        self.device = device
        self.extract = extract
        self.camera_statistics = camera_statistics
        self.last_good = last_good
        self.base_params = {id(p) for p in model.parameters()}

    def run(self, epoch: int, stats: EpochStats) -> EpochLabels:
        """The label stage of 0-based ``epoch``; adds its seconds and numbers to ``stats``."""
        ddp.broadcast_module(self.model)  # same BN statistics on every rank
        feats, fg = None, None
        if self.method.wants_features():
            start = time.perf_counter()
            mask_sets = [None, self.data.masks] if self.method.uses_masks else [None]
            camids, bn_stats = None, None
            if bool(self.cfg.camera.bn) and self.data.dataset.has_cameras:
                camids = np.asarray(self.data.camids)
                bn_stats = self.camera_statistics([(self.data.images, camids)])
            feats, *rest = self.extract(self.data.images, mask_sets, camids=camids,
                                        camera_stats=bn_stats)
            check_finite(feats, f"features of the training images at epoch {epoch + 1}",
                         self.last_good)
            if rest:
                fg = rest[0]
                check_finite(fg, f"foreground features at epoch {epoch + 1}", self.last_good)
            stats.add_seconds("extract", time.perf_counter() - start)

        start = time.perf_counter()
        outcome: Any = None
        if self.info.is_main:
            inputs = LabelInputs(
                features=feats,
                fg_features=fg,
                camids=self.data.camids,
                has_cameras=bool(self.data.dataset.has_cameras),
                true_pids=self.data.true_pids if self.method.supervised else None,
                epoch=epoch,
            )
            self.method.note_no_cameras(inputs.has_cameras)
            try:
                outcome = self.method.make_labels(inputs)
            except Exception as exc:  # every rank must stop, not only rank 0
                outcome = exc
        outcome = ddp.broadcast_object(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        labels: PseudoLabels = outcome
        stats.add_seconds("cluster", time.perf_counter() - start)
        stats.labels = self.label_stats(labels, feats)
        net = self.attach_head(labels, None if feats is None else feats.to(self.device))
        return EpochLabels(labels, self.sampler(labels, epoch), net)

    def resume(
        self, epoch: int, labels: PseudoLabels, method_state: dict[str, Any],
        sampler_state: dict[str, Any],
    ) -> EpochLabels:
        """The label stage of a checkpoint taken mid-``epoch``: no features, no clustering."""
        net = self.restore_head(labels, method_state)
        sampler = self.sampler(labels, epoch)
        sampler.load_state_dict(sampler_state)
        return EpochLabels(labels, sampler, net)

    def restore_head(self, labels: PseudoLabels, method_state: dict[str, Any]) -> nn.Module:
        """Rebuild the head of ``labels`` and load its saved state; returns the net."""
        net = self.attach_head(labels, None)
        self.method.load_state_dict(method_state)
        return net

    def attach_head(self, labels: PseudoLabels, features: torch.Tensor | None) -> nn.Module:
        """Build the method's head for ``labels``, give its parameters to the optimiser's
        head group (fresh Adam state), and return the net to train (DDP-wrapped when
        distributed)."""
        # the default builders' ReIDModel; a method's head needs its feature_dim / classifier
        self.method.build_head(cast("ReIDModel", self.model), labels, features)
        head_params = self.model_head_parameters()
        if self.method.head is not None:
            head_params += [p for p in self.method.head.parameters() if p.requires_grad]
        group = self.optimizer.param_groups[1]
        for p in group["params"]:
            self.optimizer.state.pop(p, None)
        group["params"] = head_params
        if not self.info.enabled:
            return self.model
        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    def model_head_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters added to the model after construction (its classifier)."""
        return [p for p in self.model.parameters()
                if id(p) not in self.base_params and p.requires_grad]

    def sampler(self, labels: PseudoLabels, epoch: int) -> BatchSampler:
        seed = derive_seed(self.cfg.run.seed, SAMPLER_STREAM, epoch)
        return self.method.sampler(labels, seed=seed, rank=self.info.rank,
                                   world_size=self.info.world_size)

    def label_stats(
        self, labels: PseudoLabels, features: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Classes, outliers, the method's info and (rank 0, known identities) label quality,
        with the cross-camera nearest-neighbour identity share of ``features`` (N, D) when
        they were extracted this epoch."""
        stats: dict[str, Any] = {
            "num_clusters": int(labels.num_classes),
            "num_outliers": labels.num_outliers,
        }
        if labels.info:
            stats["info"] = dict(labels.info)
        if self.data.true_pids is not None and self.info.is_main:
            stats["label_quality"] = label_quality(labels.labels, self.data.true_pids,
                                                   self.data.camids)
            # a method's own ground-truth diagnostics (e.g. cross-camera link precision)
            diagnostics = getattr(self.method, "label_diagnostics", None)
            if diagnostics is not None:
                stats["label_quality"].update(diagnostics(self.data.true_pids))
            if features is not None:
                stats["label_quality"]["cross_camera_nn_share"] = cross_camera_nn_share(
                    features, self.data.true_pids, self.data.camids)
        return stats
