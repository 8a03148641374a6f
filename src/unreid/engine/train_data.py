"""The training run's data: the dataset table, its decoded images and masks, once per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from unreid.config import Config
from unreid.data.roots import load_run_dataset, split_images
from unreid.engine import distributed as ddp
from unreid.errors import TrainingError
from unreid.masks import build_mask_provider, load_masks

__all__ = ["TrainData", "load_train_data"]


@dataclass
class TrainData:
    """What the label stage and the steps read.

    Attributes:
        dataset: the :class:`unreid.data.Dataset` (train, query, gallery tables).
        images: (N, 3, H, W) uint8 training images (a memmap when cached).
        masks: (N, 1, H, W) foreground masks in [0, 1], or None unless the
            method ``uses_masks``.
        true_pids: (N,) int64 identities when every training image has one
            (logged as label quality; given to supervised methods only), else None.
    """

    dataset: Any
    images: np.ndarray
    masks: np.ndarray | None
    true_pids: np.ndarray | None

    @property
    def camids(self) -> np.ndarray:
        """(N,) int64 camera of each training image."""
        return np.asarray(self.dataset.train.camids)


def load_train_data(cfg: Config, info: ddp.DistInfo, *, uses_masks: bool, root: Any = None,
                    layout: str | None = None, key: str = "data.root") -> TrainData:
    """Load the train split of ``cfg.data`` (and its masks when ``uses_masks``), or of
    another labelled ``root`` in ``layout`` (named ``key`` in errors, e.g. ``source.root``),
    decoded at ``data.height`` x ``data.width`` into the same cache.

    Rank 0 fills the decoded cache first so that ranks do not race to write it.
    """
    main = info.is_main
    dataset = load_run_dataset(cfg, root=root, layout=layout, key=key)
    train = dataset.train
    if len(train) == 0:
        where = cfg.data.root if root is None else root
        raise TrainingError(f"the train split of {where} is empty: check {key}")
    if main:
        images = split_images(train, cfg, progress=main)
    ddp.barrier()
    if not main:
        images = split_images(train, cfg, progress=False)
    masks = None
    if uses_masks:
        m = cfg.masks
        provider = build_mask_provider(
            m.provider, mask_dir=m.mask_dir, noise=m.noise, allow_missing=m.allow_missing,
            dataset_root=dataset.root,
        )
        masks = load_masks(
            list(train.paths), provider, cfg.data.height, cfg.data.width,
            cfg.data.cache_dir or None, images=images, progress=main,
        )
    pids = np.asarray(train.pids)
    return TrainData(dataset, images, masks, pids if (pids >= 0).all() else None)
