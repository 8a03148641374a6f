"""Batched feature extraction from decoded uint8 images (in memory or memory-mapped).

:func:`extract_feature_sets` reads each batch of images once and runs one forward
pass per mask set (e.g. SFE-CR's input and foreground features, ``x`` and
``x * mask``); :func:`extract_features` is its one-set case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unreid.models.batches import model_device, read_rows
from unreid.models.camera_bn import BNStatistics, bn_statistics_loaded, statistics_for
from unreid.models.precision import Precision, autocast
from unreid.progress import progress_bar

__all__ = ["extract_feature_sets", "extract_features"]


def extract_features(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    masks: np.ndarray | None = None,
    progress: bool = True,
    indices: np.ndarray | None = None,
    precision: Precision | None = None,
    groups: np.ndarray | None = None,
    group_stats: Mapping[int, BNStatistics] | None = None,
) -> torch.Tensor:
    """L2-normalised features of ``images`` (eval mode, no autograd).

    The one-set case of :func:`extract_feature_sets` (``mask_sets=[masks]``): see
    there for the arguments. Returns (M, D) float32 CPU features.
    """
    return extract_feature_sets(
        model, images, [masks], batch_size=batch_size, device=device, progress=progress,
        indices=indices, precision=precision, groups=groups, group_stats=group_stats,
    )[0]


def extract_feature_sets(
    model: nn.Module,
    images: np.ndarray,
    mask_sets: Sequence[np.ndarray | None],
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
    indices: np.ndarray | None = None,
    precision: Precision | None = None,
    groups: np.ndarray | None = None,
    group_stats: Mapping[int, BNStatistics] | None = None,
) -> list[torch.Tensor]:
    """L2-normalised features of ``images``, one set per entry of ``mask_sets``.

    Each batch of images is read (and converted) once; each mask set then gets
    its own forward pass of ``batch_size`` images, so peak memory is that of
    one set's batch.

    Args:
        model: a :class:`~unreid.models.ReIDModel` (or anything whose eval-mode
            forward maps [0, 1] images (B, 3, H, W) to (B, D) features). It is
            moved to ``device`` and put back in its previous train/eval mode.
        images: (N, 3, H, W) uint8. A ``np.memmap`` is read one batch at a time,
            never loaded whole.
        batch_size: images per forward pass.
        device: where to run; default the model's device.
        mask_sets: one entry per feature set: ``None`` for the plain images, or
            (N, 1, H, W) foreground masks: uint8 0/1 (what
            :func:`unreid.masks.load_masks` gives) or 0..255 (any value > 1 means
            the array is scaled to 255), or float in [0, 1]; the image is
            multiplied by the mask before the forward pass (SFE-CR's G = x * P).
        progress: tqdm bar (shown only when stderr is a terminal).
        indices: optional (M,) int rows of ``images``/``masks`` to extract, in this
            order (a rank's shard under DDP); default all N.
        precision: autocast of the forward pass (see :mod:`unreid.models.precision`);
            default fp16 on CUDA and fp32 elsewhere. Features are re-normalised in
            float32 either way.
        groups, group_stats: camera-specific BN statistics: (N,) int camera id of every
            image and ``{camera id: statistics}``
            (:func:`unreid.models.camera_bn.camera_bn_statistics`); each camera's images
            are extracted with its own statistics in the BN layers (the model's own are
            restored afterwards). Both or neither.

    Returns:
        one (M, D) float32 CPU tensor with unit rows per mask set, in order (ordinary
        tensors, usable in autograd).
    """
    if (groups is None) != (group_stats is None):
        raise ValueError("extract_feature_sets: pass groups and group_stats together")
    rows = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    if groups is None or group_stats is None:
        return _extract_sets(model, images, mask_sets, batch_size=batch_size, device=device,
                             progress=progress, rows=rows, precision=precision)
    groups = np.asarray(groups)
    if groups.shape != (len(images),):
        raise ValueError(f"groups must be one camera id per image ({len(images)}), got shape "
                         f"{groups.shape}")
    outs: list[torch.Tensor] | None = None
    for cam in np.unique(groups[rows]):
        where = np.flatnonzero(groups[rows] == cam)
        with bn_statistics_loaded(model, statistics_for(group_stats, int(cam))):
            part = _extract_sets(model, images, mask_sets, batch_size=batch_size,
                                 device=device, progress=progress, rows=rows[where],
                                 precision=precision)
        if outs is None:
            outs = [_empty(len(rows), p.shape[1]) for p in part]
        for out, p in zip(outs, part, strict=True):
            out[torch.from_numpy(where)] = p
    if outs is None:  # no rows
        return _extract_sets(model, images, mask_sets, batch_size=batch_size, device=device,
                             progress=progress, rows=rows, precision=precision)
    return outs


def _extract_sets(
    model: nn.Module,
    images: np.ndarray,
    mask_sets: Sequence[np.ndarray | None],
    *,
    batch_size: int,
    device: str | torch.device | None,
    progress: bool,
    rows: np.ndarray,
    precision: Precision | None,
) -> list[torch.Tensor]:
    """:func:`extract_feature_sets` of ``rows`` with the model's statistics as they are."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {images.shape}")
    if not mask_sets:
        raise ValueError("mask_sets must name at least one feature set (None: plain images)")
    for masks in mask_sets:
        if masks is not None and (
            masks.ndim != 4 or masks.shape[0] != images.shape[0] or masks.shape[1] != 1
            or masks.shape[2:] != images.shape[2:]
        ):
            raise ValueError(
                f"masks must be (N, 1, H, W) for images {images.shape}, got {masks.shape}")
    # One scale per mask array: a 0/1 batch of a 0..255 array must not be read as 0/1.
    mask_scales = [255.0 if m is not None and m.dtype == np.uint8 and m.size and m.max() > 1
                   else 1.0
                   for m in mask_sets]
    dev = torch.device(device) if device is not None else model_device(model)
    model.to(dev)
    net = getattr(model, "module", model)  # a DDP wrapper keeps the settings on .module
    channels_last = bool(getattr(net, "channels_last", False))
    if precision is None:
        precision = Precision("fp16" if dev.type == "cuda" else "fp32")

    was_training = model.training
    model.eval()
    outs: list[torch.Tensor] = []
    bar = progress_bar(total=len(rows), desc="extract", unit="img", leave=False,
                       enabled=progress)
    try:
        with torch.inference_mode(), autocast(dev, precision):
            for start in range(0, len(rows), batch_size):
                sel = rows[start:start + batch_size]
                images_batch = read_rows(images, sel, dev).div_(255.0)
                for k, (masks, scale) in enumerate(zip(mask_sets, mask_scales, strict=True)):
                    x = images_batch
                    if masks is not None:
                        m = read_rows(masks, sel, dev)
                        x = x * (m.div_(scale) if scale != 1.0 else m)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    # Re-normalised in float32 after a bf16/fp16 forward.
                    feats = F.normalize(model(x).float(), dim=1).cpu()
                    if len(outs) <= k:
                        # Allocated outside the batch loop's inference tensors' reach (see below).
                        outs.append(_empty(len(rows), feats.shape[1]))
                    outs[k][start:start + len(sel)] = feats
                bar.update(len(sel))
    finally:
        bar.close()
        model.train(was_training)
    if not outs:
        dim = int(getattr(net, "feature_dim", 0))
        return [torch.zeros(0, dim) for _ in mask_sets]
    return outs


def _empty(n: int, d: int) -> torch.Tensor:
    # An ordinary (not inference-mode) tensor: callers may use the features in
    # autograd or update them in place (memory initialisation), which inference
    # tensors forbid. Writing into it inside inference mode is allowed.
    with torch.inference_mode(False):
        return torch.empty(n, d, dtype=torch.float32)
