"""Using a trained checkpoint: evaluate it, extract features to .npz.

Also the data helpers the trainer shares with these commands: resolving
``data.root`` (a folder, or ``synth:default`` / ``synth:quick`` for the
generated synthetic world), loading a split's decoded images from the cache,
and the query/gallery evaluation of features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from unreid.config import Config
from unreid.errors import ConfigError
from unreid.io import FeatureFile, resolve_device

__all__ = [
    "config_from_dict",
    "evaluate_checkpoint",
    "evaluate_split",
    "extract_to_npz",
    "load_model_from_checkpoint",
    "load_run_dataset",
    "resolve_data_root",
    "split_images",
]

SYNTH_PREFIX = "synth:"


def resolve_data_root(root: str) -> Path:
    """``data.root`` -> a dataset folder; ``synth:default`` / ``synth:quick`` generate
    (once, cached under ``.cache/synth``) the synthetic world of :mod:`unreid.data.synth`."""
    root = str(root)
    if root.startswith(SYNTH_PREFIX):
        kind = root[len(SYNTH_PREFIX):]
        if kind not in ("default", "quick"):
            raise ConfigError(f"data.root={root!r}: use synth:default, synth:quick or a folder")
        from unreid.data.synth import default_world

        return Path(default_world(quick=kind == "quick"))
    return Path(root)


def load_run_dataset(cfg: Config) -> Any:
    """The :class:`unreid.data.Dataset` of ``cfg.data``."""
    from unreid.data import load_dataset

    d = cfg.data
    return load_dataset(
        resolve_data_root(d.root), layout=d.layout, camera_regex=d.camera_regex, csv=d.csv
    )


def split_images(table: Any, cfg: Config, *, progress: bool = True) -> np.ndarray:
    """(N, 3, H, W) uint8 images of a split at the configured size (memmap when cached)."""
    from unreid.data.images import load_images

    return load_images(
        list(table.paths),
        int(cfg.data.height),
        int(cfg.data.width),
        cache_dir=cfg.data.cache_dir or None,
        progress=progress,
    )


def evaluate_split(
    q_feats: torch.Tensor,
    g_feats: torch.Tensor,
    dataset: Any,
    *,
    rerank: bool = False,
    max_rank: int = 50,
) -> Any:
    """:class:`unreid.eval.EvalResult` of query vs gallery features (cosine or re-ranked)."""
    from unreid.eval import evaluate, evaluate_features

    q, g = dataset.query, dataset.gallery
    labels = (q.pids, g.pids, q.camids, g.camids)
    if rerank:
        from unreid.cluster import rerank as k_reciprocal_rerank

        return evaluate(k_reciprocal_rerank(q_feats, g_feats), *labels, max_rank=max_rank)
    return evaluate_features(q_feats, g_feats, *labels, max_rank=max_rank)


def config_from_dict(values: dict[str, Any]) -> Config:
    """A typed :class:`Config` from the plain dict stored in a checkpoint."""
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), values)  # type: ignore[return-value]
    except Exception as exc:
        raise ConfigError(f"stored config does not fit this unreid version: {exc}") from None


def load_model_from_checkpoint(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Config]:
    """The trained model (eval mode, on ``device``) and the run's config."""
    from unreid.engine.checkpoint import (
        check_model_signature,
        load_checkpoint,
        model_signature,
        resolve_checkpoint,
    )
    from unreid.models import build_model

    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    cfg.model.pretrained = "none"  # the checkpoint holds the weights
    from unreid.methods import model_feature

    model = build_model(cfg.model, 0, feature=model_feature(cfg))
    check_model_signature(state["model_signature"], model_signature(model, state["config"]), path)
    if int(state.get("num_classes", 0)) > 0:
        model.reset_classifier(int(state["num_classes"]), None)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def _features(model, table, cfg: Config, batch_size: int, device: torch.device) -> torch.Tensor:
    from unreid.models import extract_features

    images = split_images(table, cfg)
    return extract_features(model, images, batch_size=batch_size, device=device, progress=True)


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: Any,
    *,
    rerank: bool = False,
    batch_size: int = 128,
    device: str | None = None,
) -> Any:
    """Evaluate a checkpoint on ``dataset``'s query/gallery at the run's input size.

    Returns an :class:`unreid.eval.EvalResult`.
    """
    dev = resolve_device(device, setting="--device")
    model, cfg = load_model_from_checkpoint(checkpoint, dev)
    q = _features(model, dataset.query, cfg, batch_size, dev)
    g = _features(model, dataset.gallery, cfg, batch_size, dev)
    return evaluate_split(q, g, dataset, rerank=rerank, max_rank=int(cfg.eval.max_rank))


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
