"""Small helpers shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

from pathlib import Path

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
