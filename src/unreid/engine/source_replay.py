"""Source replay: keep training on the labelled source set while adapting to the target.

Adapting a source model with target pseudo-labels alone overwrites what it learnt
when those labels are poor. With ``source.root`` set, every step also draws a
P x K batch of source images with their true identities and adds
``source.weight`` times the InfoNCE loss of their features against an
identity-centroid memory (:class:`unreid.losses.ClusterMemory`, one row per
source identity, ``method.temperature`` / ``method.momentum``) to the target
loss, as joint source + target training does in domain-adaptive re-ID.

The memory is initialised once, at the start of the run, from the features of
the source training images (the trainer's extraction, i.e. the model's
retrieval vector; the loss reads the BN-neck ``feat_norm`` as the memory
methods do), then only momentum-updated, across epochs. It travels with every
checkpoint; a mid-epoch checkpoint adds the source sampler's position. The
sampler is counter based like the target's (seed ``(run.seed, SOURCE_STREAM,
epoch)``), so a resumed run draws exactly the batches the uninterrupted one
would have.

The source batch has a forward pass of its own, inside :func:`running_stats_kept`:
its BatchNorm layers normalise it with its own batch statistics but leave the
running statistics to the target batches, since those are what the target's
feature extraction and evaluation normalise with.

Cost: one more forward and backward per step, and one extraction of the source
training images at the start of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from unreid.config import Config
from unreid.data.roots import data_roots
from unreid.data.sampler import PKSampler
from unreid.engine import distributed as ddp
from unreid.engine.loop import derive_seed
from unreid.engine.train_data import load_train_data
from unreid.errors import TrainingError
from unreid.losses import ClusterMemory
from unreid.models.camera_bn import bn_layers

__all__ = ["SOURCE_AUGMENT_STREAM", "SOURCE_STREAM", "SourceReplay", "running_stats_kept"]

# derive_seed tags (the trainer's: 0 model init, 1 samplers, 2-3 the steps)
SOURCE_STREAM = 4  # the source sampler of an epoch
SOURCE_AUGMENT_STREAM = 5  # the source batch's augmentation at a step

Gather = Callable[[torch.Tensor], torch.Tensor]
ExtractOne = Callable[[np.ndarray], torch.Tensor]


@contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Within the block, the BatchNorm layers of ``model`` in training mode normalise with
    their batch's statistics as usual but leave ``running_mean`` / ``running_var`` exactly
    as they were (momentum 0: ``1 * running + 0 * batch``)."""
    layers = bn_layers(model)
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum


class SourceReplay:
    """The labelled source images, their identities, sampler and centroid memory.

    Args:
        cfg: resolved config (``source``, ``optim`` P x K, ``method`` temperature and
            momentum, ``run.seed``).
        images: (N, 3, H, W) uint8 source training images (a memmap when cached).
        pids: (N,) int64 true identity of each image, -1 = unlabelled (never drawn).
        info: DDP position.
        device: training device (where the memory lives).

    Public state: ``labels`` (N,) int64 dense identity 0..M-1 (-1 unlabelled),
    ``num_identities`` M, ``memory`` (None until :meth:`begin_epoch` of the first epoch
    or a checkpoint restores it), ``sampler`` (of the epoch in progress, else None).
    """

    def __init__(self, cfg: Config, images: np.ndarray, pids: np.ndarray, *,
                 info: ddp.DistInfo, device: torch.device) -> None:
        self.cfg = cfg
        self.images = images
        self.info = info
        self.device = device
        self.weight = float(cfg.source.weight)
        self.roots = data_roots(cfg.source.root)
        pids = np.asarray(pids, dtype=np.int64).reshape(-1)
        ids, dense = np.unique(pids[pids >= 0], return_inverse=True)
        self.labels = np.full(len(pids), -1, dtype=np.int64)
        self.labels[pids >= 0] = dense
        self._targets = torch.from_numpy(self.labels).to(device)  # row -> identity look-up
        self.num_identities = len(ids)
        roots = ", ".join(self.roots)
        if self.num_identities == 0:
            raise TrainingError(
                f"source.root={roots} has no identity labels: source replay trains with the "
                "true identities, so give a labelled set (Market-1501 or MSMT17 layout, whose "
                "file names carry the identity)")
        need = int(cfg.optim.num_identities) * info.world_size
        if self.num_identities < need:
            raise TrainingError(
                f"source.root={roots} has only {self.num_identities} identities, but a step "
                f"draws optim.num_identities={cfg.optim.num_identities} x {info.world_size} "
                "process(es) of them: add source roots or lower optim.num_identities")
        self.memory: ClusterMemory | None = None
        self.sampler: PKSampler | None = None

    @classmethod
    def from_config(cls, cfg: Config, info: ddp.DistInfo,
                    device: torch.device) -> SourceReplay | None:
        """The replay of ``cfg.source``, its train split decoded; None when it is off."""
        if cfg.source.root is None:
            return None
        data = load_train_data(cfg, info, uses_masks=False, root=cfg.source.root,
                               layout=str(cfg.source.layout), key="source.root")
        return cls(cfg, data.images, np.asarray(data.dataset.train.pids),
                   info=info, device=device)

    def describe(self) -> str:
        """The run log's line on what is replayed."""
        labelled = int((self.labels >= 0).sum())
        return (f"source replay: {labelled} images of {self.num_identities} identities from "
                f"{', '.join(self.roots)}, weight {self.weight:g}")

    # ------------------------------------------------------------ per epoch

    def begin_epoch(self, epoch: int, extract: ExtractOne) -> None:
        """Build 0-based ``epoch``'s sampler; the first time, initialise the memory to the
        identity means of ``extract(images)`` ((N, D) features of the current model)."""
        if self.memory is None:
            feats = extract(self.images).to(self.device)
            self.memory = self._new_memory(feats.shape[1]).init_centroids(feats, self._targets)
        self.sampler = self._sampler(epoch)

    def end_epoch(self) -> None:
        self.sampler = None

    def next_index(self) -> np.ndarray:
        """(P*K,) int64 rows of ``images`` for this rank's next source batch."""
        assert self.sampler is not None, "begin_epoch first"
        return self.sampler.next_batch()

    # ------------------------------------------------------------ per step

    def loss(self, out: Any, index: torch.Tensor, gather: Gather) -> torch.Tensor:
        """``source.weight`` x InfoNCE of the source batch's ``out.feat_norm`` against the
        identity centroids, then the momentum update with every rank's batch (``gather``
        concatenates across ranks in rank order, so the memory copies stay identical).

        Args:
            out: the model's train-mode output on the source batch.
            index: (B,) int64 rows of ``images`` of the batch, on the training device.
        """
        assert self.memory is not None, "begin_epoch first"
        feats = out.feat_norm
        targets = self._targets[index]
        loss = self.memory(feats, targets, gather(feats.detach()), gather(targets))
        return self.weight * loss

    # ------------------------------------------------------------ state

    def state_dict(self, kind: str) -> dict[str, Any]:
        """The memory; for a mid-epoch (``kind`` "step") checkpoint the sampler too."""
        state: dict[str, Any] = {}
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        if kind == "step" and self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], epoch: int) -> None:
        """Restore the memory (and, mid-``epoch``, the sampler's position)."""
        if "memory" in state:
            rows, dim = state["memory"]["centroids"].shape
            if rows != self.num_identities:
                raise TrainingError(
                    f"the checkpoint's source memory has {rows} identities but source.root "
                    f"now holds {self.num_identities}: resume with the same source.root")
            self.memory = self._new_memory(int(dim))
            self.memory.load_state_dict(state["memory"])
        if "sampler" in state:
            self.sampler = self._sampler(epoch)
            self.sampler.load_state_dict(state["sampler"])

    # ------------------------------------------------------------ helpers

    def _new_memory(self, dim: int) -> ClusterMemory:
        m = self.cfg.method
        return ClusterMemory(dim, self.num_identities,
                             temperature=float(m.temperature),
                             momentum=float(m.momentum)).to(self.device)

    def _sampler(self, epoch: int) -> PKSampler:
        o = self.cfg.optim
        return PKSampler(self.labels, int(o.num_identities), int(o.num_instances),
                         seed=derive_seed(self.cfg.run.seed, SOURCE_STREAM, epoch),
                         rank=self.info.rank, world_size=self.info.world_size)
