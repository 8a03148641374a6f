"""Small helpers shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

from unreid.engine.hooks import HookBase


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
