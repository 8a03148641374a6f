"""Camera-specific batch-norm statistics for extraction (the test-time half of camera-based
batch normalisation, Zhuang et al., ECCV 2020).

A model's BatchNorm layers normalise every image with one mean and variance, estimated on
the training batches, which mix the cameras. On features that see the camera (light,
background, optics) each camera's images then sit in their own region of feature space. Here
each camera gets its own statistics: :func:`camera_bn_statistics` re-estimates every BN
layer's running mean and variance from that camera's images alone (no labels, no gradient),
and :func:`bn_statistics_loaded` puts one camera's statistics into the model for the
extraction of that camera's images (:func:`unreid.models.extract_feature_sets` with
``groups``). The model's own statistics are restored afterwards, so training is untouched.

The training half: :func:`camera_batch_slices` sorts a training batch by camera, and within
:func:`batch_norm_split` every BN layer normalises each camera's rows with that camera's own
batch statistics, so the loss compares images each normalised as its camera is (one forward
pass: DistributedDataParallel sees an ordinary step).

How the statistics are estimated: BN layers in training mode (everything else in eval mode:
no dropout), a cumulative average over batches (``momentum=None``) of the batch statistics,
the camera's images in a fixed shuffled order (rows of one person are often consecutive on
disk, and batches of one person would average too small a variance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from unreid.models.batches import model_device, read_rows
from unreid.models.precision import Precision, autocast
from unreid.progress import progress_bar

__all__ = [
    "BNStatistics",
    "batch_norm_split",
    "bn_layers",
    "bn_statistics_loaded",
    "camera_batch_slices",
    "camera_bn_statistics",
    "statistics_for",
]

# One (running_mean, running_var) pair per BN layer of the model, in module order.
BNStatistics = list[tuple[torch.Tensor, torch.Tensor]]

# Seed of the fixed order the statistics pass reads a camera's images in.
_ORDER_SEED = 0


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` (a DDP wrapper's ``.module``) that keep running
    statistics, in module order."""
    net = getattr(model, "module", model)
    return [m for m in net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def bn_statistics_loaded(model: nn.Module, stats: BNStatistics) -> Iterator[None]:
    """Within the block, the BN layers of ``model`` hold ``stats`` (from
    :func:`camera_bn_statistics`); their own running statistics are restored after it."""
    layers = bn_layers(model)
    if len(stats) != len(layers):
        raise ValueError(f"bn_statistics_loaded: {len(stats)} statistics for a model with "
                         f"{len(layers)} BatchNorm layers")
    saved = [_buffers(m) for m in layers]
    try:
        with torch.no_grad():
            for m, (mean, var) in zip(layers, stats, strict=True):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        yield
    finally:
        _restore(layers, saved)


def camera_batch_slices(camids: np.ndarray, min_rows: int = 2) -> tuple[np.ndarray, list[int]]:
    """The order that sorts a batch by camera and the sizes of its consecutive camera slices.

    Args:
        camids: (B,) camera id of each row of a batch.
        min_rows: the fewest rows a slice may have; a camera with fewer rows joins the
            slice before it (the first camera's, the one after it), because a batch
            statistic of one row has no variance (a BatchNorm1d layer refuses it).

    Returns:
        ``(order, sizes)``: a stable argsort of ``camids`` (rows of a camera keep their
        order) and the slice sizes, which sum to B (one slice when the batch has fewer than
        ``min_rows`` rows in all).
    """
    camids = np.asarray(camids).reshape(-1)
    if min_rows < 1:
        raise ValueError(f"camera_batch_slices: min_rows must be >= 1, got {min_rows}")
    order = np.argsort(camids, kind="stable")
    _, counts = np.unique(camids[order], return_counts=True)
    sizes: list[int] = []
    for count in counts.tolist():
        if sizes and (count < min_rows or sizes[-1] < min_rows):
            sizes[-1] += count
        else:
            sizes.append(count)
    return order, sizes


@contextmanager
def batch_norm_split(model: nn.Module, sizes: Sequence[int] | None) -> Iterator[None]:
    """Within the block, every BatchNorm layer of ``model`` in training mode normalises
    consecutive slices of ``sizes`` rows of its input separately, each with the slice's own
    batch statistics (each slice also updates the running statistics, one after another).

    Layers in eval mode, and every layer when ``sizes`` is None or a single slice, behave as
    before. The layer's own ``forward`` runs on each slice, so a BN subclass that adds an
    activation (timm's ``BatchNormAct2d``) keeps it. A batch whose row count is not
    ``sum(sizes)`` is a ValueError.
    """
    if sizes is None or len(sizes) <= 1:
        yield
        return
    sizes = [int(s) for s in sizes]
    if min(sizes) < 1:
        raise ValueError(f"batch_norm_split: every slice needs at least one row, got {sizes}")
    rows = sum(sizes)
    net = getattr(model, "module", model)
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def split_forward(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        own = type(layer).forward.__get__(layer)

        def forward(x: torch.Tensor) -> torch.Tensor:
            if not layer.training:
                return own(x)
            if x.shape[0] != rows:
                raise ValueError(f"batch_norm_split: a batch of {x.shape[0]} rows, the "
                                 f"slices {sizes} sum to {rows}")
            return torch.cat([own(part) for part in torch.split(x, sizes)])

        return forward

    for m in layers:
        m.forward = split_forward(m)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for m in layers:
            del m.forward


def camera_bn_statistics(
    model: nn.Module,
    image_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    precision: Precision | None = None,
    progress: bool = True,
) -> dict[int, BNStatistics]:
    """Every BN layer's running mean and variance, re-estimated per camera.

    Args:
        model: a :class:`~unreid.models.ReIDModel` (or a DDP wrapper of one); its
            parameters, statistics and train/eval mode are as before when this returns.
        image_sets: ``(images, camids)`` pairs: (N, 3, H, W) uint8 images (a memmap is
            read one batch at a time) and their (N,) int camera ids. A camera's statistics
            come from its images in every set together (query and gallery, say).
        batch_size: images per forward pass (at least 2: a batch statistic of one image
            has no variance).
        device: where to run; default the model's device.
        precision: autocast of the forward passes; default fp32 (BN statistics are
            accumulated in float32 either way).
        progress: tqdm bar (shown only when stderr is a terminal).

    Returns:
        ``{camera id: statistics}`` for every camera id present (a camera with a single
        image keeps the model's own statistics: one image has no variance); each camera's
        statistics are a pure function of its images (every rank of a sharded run
        computes the same ones).
    """
    if batch_size < 2:
        raise ValueError(f"camera_bn_statistics: batch_size must be >= 2, got {batch_size}")
    for images, camids in image_sets:
        if images.ndim != 4 or images.shape[1] != 3 or len(camids) != len(images):
            raise ValueError(
                f"camera_bn_statistics: need (N, 3, H, W) images and N camera ids, got "
                f"{images.shape} and {len(camids)}")
    cameras = sorted({int(c) for _, camids in image_sets for c in np.unique(camids)})
    layers = bn_layers(model)
    dev = torch.device(device) if device is not None else model_device(model)
    precision = precision or Precision("fp32")
    net = getattr(model, "module", model)
    channels_last = bool(getattr(net, "channels_last", False))
    saved = [_buffers(m) for m in layers]
    was_training = model.training
    model.to(dev)
    total = sum(len(images) for images, _ in image_sets)
    bar = progress_bar(total=total, desc="camera BN", unit="img", leave=False,
                       enabled=progress)
    out: dict[int, BNStatistics] = {}
    try:
        model.eval()
        for m in layers:
            m.train()
            m.momentum = None  # cumulative average of the batches' statistics
        with torch.no_grad(), autocast(dev, precision):
            for cam in cameras:
                for m in layers:
                    m.reset_running_stats()
                batches = 0
                for images, camids in image_sets:
                    rows = np.flatnonzero(np.asarray(camids) == cam)
                    rows = rows[np.random.default_rng(_ORDER_SEED).permutation(len(rows))]
                    for start in range(0, len(rows), batch_size):
                        sel = np.sort(rows[start:start + batch_size])
                        if len(sel) < 2:  # a trailing single image: no variance to add
                            continue
                        x = read_rows(images, sel, dev).div_(255.0)
                        if channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        model(x)
                        batches += 1
                        bar.update(len(sel))
                if batches == 0:  # one image only: no statistics of its own, the model's
                    # (every layer here tracks running statistics: none is None)
                    out[cam] = [(mean, var) for mean, var, *_ in saved
                                if mean is not None and var is not None]
                    continue
                out[cam] = [(m.running_mean.detach().clone(),  # type: ignore[union-attr]
                             m.running_var.detach().clone())  # type: ignore[union-attr]
                            for m in layers]
    finally:
        bar.close()
        _restore(layers, saved)
        model.train(was_training)
    return out


_Saved = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, float | None, bool]


def _buffers(m: nn.modules.batchnorm._BatchNorm) -> _Saved:
    def copy(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().clone()

    return (copy(m.running_mean), copy(m.running_var), copy(m.num_batches_tracked),
            m.momentum, m.training)


def _restore(layers: Sequence[nn.modules.batchnorm._BatchNorm], saved: Sequence[_Saved]) -> None:
    with torch.no_grad():
        for m, (mean, var, count, momentum, training) in zip(layers, saved, strict=True):
            for own, value in ((m.running_mean, mean), (m.running_var, var),
                               (m.num_batches_tracked, count)):
                if own is not None and value is not None:
                    own.copy_(value)
            m.momentum = momentum
            m.train(training)


def statistics_for(stats: Mapping[int, BNStatistics], cam: int) -> BNStatistics:
    """The statistics of camera ``cam``; a clear error when none were estimated for it."""
    try:
        return stats[int(cam)]
    except KeyError:
        raise ValueError(f"no camera BN statistics for camera {cam} (have "
                         f"{sorted(stats)})") from None
