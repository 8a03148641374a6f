"""The bare epoch loop: epochs of ``iters`` steps, hook calls, the per-epoch record.

:class:`TrainerBase` knows nothing of models, data or methods. A subclass
fills in :meth:`TrainerBase.begin_epoch` (what happens before the first step
of an epoch: the label stage in :class:`unreid.engine.trainer.Trainer`) and
:meth:`TrainerBase.run_step` (one optimisation step, returning its loss);
hooks (:mod:`unreid.engine.hooks`) do the rest around it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from unreid.engine.logger import jsonable, progress

if TYPE_CHECKING:
    from unreid.engine.hooks import HookBase

__all__ = ["EpochStats", "TrainerBase", "derive_seed"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (independent streams for different tuples).

    Randomness is counter based: the samplers and every step's augmentation and
    dropout draw from seeds of ``(run.seed, stream, epoch, step, rank)``, so a
    run resumed from any checkpoint continues exactly as the uninterrupted run.
    """
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2,
               dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class EpochStats:
    """The running sums of one epoch, saved in mid-epoch checkpoints.

    Attributes:
        lr: learning rate of group 0 during the epoch.
        loss_sum: sum of the steps' (rank-averaged) total losses.
        terms: sum of each named loss term over the steps.
        seconds: wall-clock seconds per phase (``extract``, ``cluster``, ``train``, ...).
        labels: the label stage's numbers for the record (classes, outliers, quality).
    """

    lr: float = math.nan
    loss_sum: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)

    def add_seconds(self, key: str, value: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + value

    def add_loss(self, total: float, terms: dict[str, float]) -> None:
        self.loss_sum += total
        for name, value in terms.items():
            self.terms[name] = self.terms.get(name, 0.0) + value

    def record(self, epoch: int, steps: int) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl`` (1-based ``epoch``, means over ``steps``)."""
        steps = max(int(steps), 1)
        rec: dict[str, Any] = {"epoch": epoch, "loss": self.loss_sum / steps, "lr": self.lr}
        if self.terms:
            rec["losses"] = {k: v / steps for k, v in self.terms.items()}
        rec.update(self.labels)
        rec["seconds"] = dict(self.seconds)
        return rec

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers, lists and dicts (``weights_only``-safe, JSON-able)."""
        return jsonable(asdict(self))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EpochStats:
        return cls(**state)


class TrainerBase:
    """Epochs of ``iters`` steps with hooks; see the module docstring.

    Public state the hooks use: ``epoch`` (0-based epoch in progress),
    ``step`` (steps done in it), ``stats`` (the running epoch's sums, None
    between epochs), ``records`` (one dict per logged epoch; the current
    one is ``record``).
    """

    def __init__(self, epochs: int, iters: int, *, show_progress: bool = True) -> None:
        self.epochs = int(epochs)
        self.iters = int(iters)
        self.show_progress = show_progress
        self.epoch = 0
        self.step = 0
        self.stats: EpochStats | None = None
        self.records: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}
        self.hooks: list[HookBase] = []

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Append ``hooks`` (called in registration order) and give each this trainer."""
        for hook in hooks:
            hook.trainer = self  # type: ignore[assignment]
            self.hooks.append(hook)

    def call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)()

    # ------------------------------------------------------------ to fill in

    def begin_epoch(self) -> None:
        """Prepare the epoch before its first step (not called when resumed mid-epoch)."""

    def run_step(self) -> float:
        """One optimisation step; returns its loss."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Drop the epoch's state once its hooks ran."""

    def close(self) -> None:
        """Release what the run holds open (called however training ends)."""

    # ------------------------------------------------------------ the loop

    def train(self) -> list[dict[str, Any]]:
        """Run (or continue) training to ``epochs``; returns the records."""
        try:
            self.call("before_train")
            while self.epoch < self.epochs:
                self.run_epoch()
            self.call("after_train")
        finally:
            self.close()
        return self.records

    def run_epoch(self) -> None:
        self.call("before_epoch")
        if self.stats is None:  # else resumed mid-epoch: its labels and sums are restored
            self.stats = EpochStats()
            self.begin_epoch()
        stats = self.stats
        start = time.perf_counter()
        bar = progress(total=self.iters, desc=f"epoch {self.epoch + 1}",
                       enabled=self.show_progress)
        bar.update(self.step)
        while self.step < self.iters:
            self.call("before_step")
            loss = self.run_step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            stats.add_seconds("train", time.perf_counter() - start)
            start = time.perf_counter()
            self.call("after_step")
        bar.close()
        self.record = stats.record(self.epoch + 1, self.iters)
        self.records.append(self.record)
        self.call("after_epoch")
        self.epoch += 1
        self.step = 0
        self.stats = None
        self.end_epoch()
