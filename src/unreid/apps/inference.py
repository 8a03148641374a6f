"""Using a trained checkpoint: rebuild its model, evaluate it, extract features.

The model is rebuilt from what the checkpoint says about itself (its config,
the resolved ``model.feature``), so no method registry is needed for a
checkpoint that records its feature choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from unreid.config import Config, config_from_dict
from unreid.data.roots import split_images
from unreid.engine.checkpoint import (
    check_model_signature,
    load_checkpoint,
    model_signature,
    resolve_checkpoint,
)
from unreid.eval import evaluate_split
from unreid.io import FeatureFile, resolve_device
from unreid.methods import model_feature
from unreid.models import build_model, extract_features
from unreid.models.camera_bn import camera_bn_statistics
from unreid.models.precision import Precision, extraction_precision

__all__ = ["evaluate_checkpoint", "evaluate_model", "extract_to_npz",
           "load_model_from_checkpoint"]


def load_model_from_checkpoint(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Config]:
    """The trained model (eval mode, on ``device``) and the run's config.

    The model's feature is the one the checkpoint records (``model_feature``); a
    checkpoint written before it recorded one falls back to the method's choice.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    cfg.model.pretrained = "none"  # the checkpoint holds the weights
    feature = state.get("model_feature")
    if feature is None:
        feature = model_feature(cfg)
    model = build_model(cfg.model, 0, feature=str(feature))
    check_model_signature(state["model_signature"], model_signature(model, state["config"]), path)
    if int(state.get("num_classes", 0)) > 0:
        model.reset_classifier(int(state["num_classes"]), None)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def _precision(model, images: np.ndarray, cfg: Config, device: torch.device) -> Precision:
    """The run's ``run.precision``, decided for this machine and model as training decides
    it (:mod:`unreid.models.precision`)."""
    sample = torch.from_numpy(np.array(images[:64]))  # a copy: the cache is read-only
    return extraction_precision(str(cfg.run.precision), model, device, sample)


def embed_images(model, images: np.ndarray, cfg: Config, batch_size: int,
                 device: torch.device) -> torch.Tensor:
    """(N, D) features of uint8 ``images`` in the run's ``run.precision``."""
    return extract_features(model, images, batch_size=batch_size, device=device, progress=True,
                            precision=_precision(model, images, cfg, device))


def _features(model, table, cfg: Config, batch_size: int, device: torch.device) -> torch.Tensor:
    return embed_images(model, split_images(table, cfg), cfg, batch_size, device)


def _camera_bn_features(model, tables: list[Any], cfg: Config, batch_size: int,
                        device: torch.device) -> list[torch.Tensor]:
    """Features of each split in ``tables``, each camera's images extracted with BN
    statistics of that camera's images in all of ``tables``
    (:mod:`unreid.models.camera_bn`)."""
    images = [split_images(t, cfg) for t in tables]
    sets = [(im, np.asarray(t.camids)) for im, t in zip(images, tables, strict=True)]
    precision = _precision(model, images[0], cfg, device)
    stats = camera_bn_statistics(model, sets, batch_size=batch_size, device=device,
                                 precision=precision)
    return [extract_features(model, im, batch_size=batch_size, device=device, progress=True,
                             precision=precision, groups=cams, group_stats=stats)
            for im, cams in sets]


def evaluate_model(
    model: torch.nn.Module,
    cfg: Config,
    dataset: Any,
    *,
    rerank: bool = False,
    batch_size: int = 128,
    device: torch.device | None = None,
    protocol: str = "auto",
    standardize_cameras: bool = False,
    camera_bn: bool = False,
) -> Any:
    """Evaluate ``model`` (of the run ``cfg``: input size, precision, ``eval.max_rank``) on
    ``dataset``'s query/gallery under ``protocol`` (``auto``, ``market`` or
    ``all-gallery``; :mod:`unreid.eval.protocol`).

    ``standardize_cameras``: per-camera feature standardisation; ``camera_bn``: each
    camera's images extracted with BN statistics of that camera's query and gallery images
    (:mod:`unreid.models.camera_bn`). Returns an :class:`unreid.eval.EvalResult`.
    """
    dev = device if device is not None else next(model.parameters()).device
    if camera_bn:
        q, g = _camera_bn_features(model, [dataset.query, dataset.gallery], cfg, batch_size,
                                   dev)
    else:
        q = _features(model, dataset.query, cfg, batch_size, dev)
        g = _features(model, dataset.gallery, cfg, batch_size, dev)
    return evaluate_split(q, g, dataset, rerank=rerank, max_rank=int(cfg.eval.max_rank),
                          standardize_cameras=standardize_cameras, protocol=protocol)


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: Any,
    *,
    rerank: bool = False,
    batch_size: int = 128,
    device: str | None = None,
    protocol: str = "auto",
    standardize_cameras: bool | None = None,
    camera_bn: bool | None = None,
) -> Any:
    """Evaluate a checkpoint on ``dataset``'s query/gallery at the run's input size
    (:func:`evaluate_model`); ``standardize_cameras`` / ``camera_bn`` ``None`` = the run's
    ``camera.standardize_test`` / ``camera.bn_test``.

    Returns an :class:`unreid.eval.EvalResult` (its ``note`` says when ``auto`` chose
    all-gallery).
    """
    dev = resolve_device(device, setting="--device")
    model, cfg = load_model_from_checkpoint(checkpoint, dev)
    return evaluate_model(
        model, cfg, dataset, rerank=rerank, batch_size=batch_size, device=dev,
        protocol=protocol,
        standardize_cameras=(bool(cfg.camera.standardize_test) if standardize_cameras is None
                             else standardize_cameras),
        camera_bn=bool(cfg.camera.bn_test) if camera_bn is None else camera_bn,
    )


def extract_to_npz(
    checkpoint: str | Path,
    dataset: Any,
    out: str | Path,
    *,
    batch_size: int = 128,
    device: str | None = None,
) -> Path:
    """Features of every split to ``out`` (.npz, written atomically): a
    :class:`unreid.io.FeatureFile` with every key, ``feats`` (N, D) float32
    L2-normalised, ``split`` (N,) "train" / "query" / "gallery"."""
    dev = resolve_device(device, setting="--device")
    model, cfg = load_model_from_checkpoint(checkpoint, dev)
    feats, pids, camids, split, paths = [], [], [], [], []
    for name in ("train", "query", "gallery"):
        table = getattr(dataset, name)
        if len(table) == 0:
            continue
        feats.append(_features(model, table, cfg, batch_size, dev).numpy())
        pids.append(np.asarray(table.pids))
        camids.append(np.asarray(table.camids))
        split.append(np.full(len(table), name))
        paths.append(np.asarray(table.paths, dtype=str))
    return FeatureFile(
        feats=np.concatenate(feats).astype(np.float32),
        pids=np.concatenate(pids).astype(np.int64),
        camids=np.concatenate(camids).astype(np.int64),
        split=np.concatenate(split),
        paths=np.concatenate(paths),
    ).save(out)
