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
