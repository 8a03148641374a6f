"""Small helpers shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unreid.config import Config, load_config
from unreid.engine.hooks import HookBase

# The tiny end-to-end setting: tiny_cnn at 64x32 on CPU from a random init, batches of
# 4 pseudo-identities x 4 images, no warm-up, 3 epochs of 8 steps evaluated every epoch.
TINY_EPOCHS = 3
# The transfer runs' setting on top of it: 20 steps per epoch at a higher rate,
# evaluated before and after training only.
TRANSFER = ("optim.iters=20", "optim.lr=1e-3", "eval.eval_every=0")


def tiny_cfg(world: Path, out: Path, *overrides: str) -> Config:
    """The tiny end-to-end config for the dataset at ``world``, run folder ``out`` (the
    decoded-image cache sits next to it); ``overrides`` (dotted keys) come last."""
    return load_config(
        [],
        [
            f"data.root={world}", f"data.cache_dir={out.parent / 'image-cache'}",
            "data.height=64", "data.width=32", "model.backbone=tiny_cnn",
            "model.pretrained=none", f"optim.epochs={TINY_EPOCHS}", "optim.iters=8",
            "optim.num_identities=4", "optim.num_instances=4", "optim.warmup_epochs=0",
            "cluster.k1=10", "cluster.k2=3", "eval.eval_every=1", "run.device=cpu",
            "run.report=false", "run.checkpoint_minutes=0", f"run.out_dir={out}",
            *overrides,
        ],
    )


class Kill(HookBase):
    """Simulates a process killed mid-epoch (after a step checkpoint was written)."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def after_step(self) -> None:
        if (self.trainer.epoch, self.trainer.step) == self.at:
            raise KeyboardInterrupt


def second_half_gain(records: list[dict], key: str = "ari") -> float:
    """Mean of ``label_quality[key]`` over the second half of the training epochs minus
    its value at epoch 1 (records[0] is the evaluation before training).

    One epoch's value moves with float rounding, which differs between processors;
    the mean over half the run does not, so end-to-end tests assert on this gain.
    """
    values = [r["label_quality"][key] for r in records[1:]]
    late = values[len(values) // 2:]
    return sum(late) / len(late) - values[0]


def camera_planted(ids: int, per_camera: int, *, camera: float, seed: int = 0):
    """Planted people walking past 2 cameras: each identity is a weak centre plus the
    camera's offset (``camera`` times a random vector shared by everyone that camera
    sees), ``per_camera / 2`` moments per camera, each a tight pair of frames (the
    near-duplicates), in 64 dimensions. Returns (features (N, 64), identity (N,),
    camera (N,)), N = ids * 2 * per_camera."""
    rng = np.random.default_rng(seed)
    dim = 64
    centres = rng.normal(size=(ids, dim))
    offsets = camera * rng.normal(size=(2, dim))
    pids = np.repeat(np.arange(ids), 2 * per_camera)
    cams = np.tile(np.repeat(np.arange(2), per_camera), ids)
    moments = np.repeat(0.7 * rng.normal(size=(len(pids) // 2, dim)), 2, axis=0)
    feats = centres[pids] + offsets[cams] + moments + 0.4 * rng.normal(size=(len(pids), dim))
    return feats.astype(np.float32), pids, cams
