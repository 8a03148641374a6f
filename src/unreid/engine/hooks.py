"""Trainer hooks (detectron2 / fast-reid style): everything around the epoch loop.

The trainer calls, for every hook in registration order::

    before_train()
    for each epoch:   before_epoch()
        for each step:    before_step(); <step>; after_step()
        <record appended to trainer.records>
        after_epoch()
    after_train()

The default order matters and is fixed by :func:`default_hooks`: the LR
scheduler steps, the evaluator adds ``eval`` to the epoch's record, the
checkpointer saves (records included), the metrics writer appends the line,
the report writer runs at the end. Hooks reach the run through
``self.trainer`` (set by the trainer when it registers them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from unreid.engine.trainer import Trainer

__all__ = [
    "CheckpointHook",
    "EvalHook",
    "HookBase",
    "LRSchedulerHook",
    "MetricsHook",
    "ReportHook",
    "default_hooks",
]


class HookBase:
    """Override any of the six methods; ``self.trainer`` is the running trainer."""

    trainer: Trainer

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


class LRSchedulerHook(HookBase):
    """Steps the epoch-based LR schedule once per finished epoch."""

    def after_epoch(self) -> None:
        self.trainer.scheduler.step()


class EvalHook(HookBase):
    """Query/gallery evaluation: before training (epoch 0) and every ``eval.eval_every`` epochs.

    The last epoch is always evaluated; ``eval_every <= 0`` evaluates only the
    start and the end.
    """

    def before_train(self) -> None:
        t = self.trainer
        if t.records:  # resumed: the initial evaluation is already logged
            return
        start = time.perf_counter()
        result = t.evaluate()
        record: dict[str, Any] = {"epoch": 0, "seconds": {"eval": time.perf_counter() - start}}
        if result is not None:
            record["eval"] = result.as_dict()
            t.log(f"epoch 0 (before training): {_eval_line(record['eval'])}")
        t.records.append(record)
        t.keep_embedding("before")

    def after_epoch(self) -> None:
        t = self.trainer
        every = int(t.cfg.eval.eval_every)
        done = t.epoch + 1
        if done != t.cfg.optim.epochs and (every <= 0 or done % every):
            return
        start = time.perf_counter()
        result = t.evaluate()
        t.record["seconds"]["eval"] = time.perf_counter() - start
        if result is not None:
            t.record["eval"] = result.as_dict()


class CheckpointHook(HookBase):
    """Epoch checkpoints, plus mid-epoch ones every N steps and/or M minutes."""

    def __init__(self, every_steps: int = 0, every_minutes: float = 0.0) -> None:
        self.every_steps = int(every_steps)
        self.every_seconds = float(every_minutes) * 60.0
        self._last = time.monotonic()

    def before_epoch(self) -> None:
        self._last = time.monotonic()

    def after_step(self) -> None:
        t = self.trainer
        if t.step >= t.cfg.optim.iters:  # the epoch checkpoint follows at once
            return
        due_steps = self.every_steps > 0 and t.step % self.every_steps == 0
        due_time = self.every_seconds > 0 and time.monotonic() - self._last >= self.every_seconds
        if due_steps or due_time:
            t.save_checkpoint(kind="step")
            self._last = time.monotonic()

    def after_epoch(self) -> None:
        self.trainer.save_checkpoint(kind="epoch")


class MetricsHook(HookBase):
    """``metrics.jsonl``: rewritten from the records at the start (exactly once per
    epoch after a resume), then one line per epoch, and a console summary."""

    def before_train(self) -> None:
        self.trainer.logger.rewrite(self.trainer.records)

    def after_epoch(self) -> None:
        t = self.trainer
        t.logger.write(t.record)
        t.log(_epoch_line(t.record, t.cfg.optim.epochs))


class ReportHook(HookBase):
    """At the end: the arrays the HTML report needs, then the report itself (if viz has it)."""

    def after_train(self) -> None:
        t = self.trainer
        if not t.info.is_main:
            return
        import unreid.viz as viz

        if hasattr(viz, "save_report_data"):
            viz.save_report_data(t.run_dir, **t.report_arrays())
        if hasattr(viz, "write_report"):
            index = viz.write_report(t.run_dir)
            t.log(f"report: {index}")


def default_hooks(cfg: Any) -> list[HookBase]:
    hooks: list[HookBase] = [
        LRSchedulerHook(),
        EvalHook(),
        CheckpointHook(cfg.run.checkpoint_steps, cfg.run.checkpoint_minutes),
        MetricsHook(),
    ]
    if cfg.run.report:
        hooks.append(ReportHook())
    return hooks


def _eval_line(ev: dict[str, Any]) -> str:
    return " ".join(f"{k} {100 * ev[k]:.1f}" for k in ("mAP", "R1", "R5", "mINP") if k in ev)


def _epoch_line(rec: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {rec['epoch']}/{epochs}", f"loss {rec.get('loss', float('nan')):.3f}"]
    if "num_clusters" in rec:
        parts.append(f"classes {rec['num_clusters']} (outliers {rec.get('num_outliers', 0)})")
    lq = rec.get("label_quality") or {}
    if isinstance(lq.get("ari"), float) and np.isfinite(lq["ari"]):
        parts.append(f"ARI {lq['ari']:.3f}")
    if "eval" in rec:
        parts.append(_eval_line(rec["eval"]))
    secs = rec.get("seconds") or {}
    parts.append("[" + " ".join(f"{k} {v:.0f}s" for k, v in secs.items()) + "]")
    return "  ".join(parts)
