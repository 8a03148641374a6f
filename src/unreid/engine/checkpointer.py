"""What a training checkpoint holds, and how a run continues from one.

A checkpoint describes itself: besides the weights it carries the run's
config, the resolved ``model_feature`` (the retrieval vector, ``bn`` or
``pool``), the model signature and ``num_classes``, so evaluation, extraction,
search and export rebuild the model without the method registry (a run of an
out-of-tree method still evaluates). To continue the run exactly it also holds
the optimiser, schedule, AMP scaler, the method's head, the RNG states, the
records and the hooks' state (and, with source replay, its identity memory); a
mid-epoch (``step``) checkpoint adds the epoch's labels, the samplers' positions
and the epoch's running sums.

Files and the atomic write are those of :mod:`unreid.engine.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from unreid import __version__
from unreid.engine.checkpoint import (
    CHECKPOINT,
    FORMAT,
    STEP_CHECKPOINT,
    check_model_signature,
    get_rng_state,
    non_finite_parameters,
    save_checkpoint,
    set_rng_state,
)
from unreid.engine.loop import EpochStats
from unreid.errors import TrainingError
from unreid.methods import PseudoLabels
from unreid.models.precision import Precision

if TYPE_CHECKING:
    from unreid.engine.trainer import Trainer
    from unreid.models import ReIDModel

__all__ = ["Checkpointer"]


class Checkpointer:
    """Saves and restores the state of ``trainer`` (rank 0 writes, every rank reads)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def state_dict(self, kind: str) -> dict[str, Any]:
        """Everything needed to continue: ``kind`` "epoch" (after a finished epoch) or
        "step" (mid-epoch: with the epoch's labels, sampler and running sums)."""
        t = self.trainer
        state: dict[str, Any] = {
            "format": FORMAT,
            "kind": kind,
            "unreid_version": __version__,
            "config": t.cfg_dict,
            "model_feature": t.model_feature,
            "model_signature": t.signature,
            "epoch": t.epoch + 1 if kind == "epoch" else t.epoch,
            "step": t.step if kind == "step" else 0,
            "model": t.model.state_dict(),
            "num_classes": self._model_classes(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict(),
            "method": t.method.state_dict(),
            "rng": get_rng_state(),
            "records": [dict(r) for r in t.records],
            "hooks": self._hook_states(),
            # a resumed run keeps this choice (the bf16 check could flip on new weights)
            "extract_precision": None if t.extract_precision is None
            else [t.extract_precision.name, t.extract_precision.reason],
        }
        if t.replay is not None:
            state["source_replay"] = t.replay.state_dict(kind)
        current = t.current
        # A method whose labels do not come from features keeps its head across epochs,
        # so the head's labels travel with the epoch checkpoint too.
        if current is not None and (kind == "step" or not t.method.needs_features):
            state["labels"] = current.labels.state_dict()
        if kind == "step":
            assert current is not None and t.stats is not None
            state["sampler"] = current.sampler.state_dict()
            state["stats"] = t.stats.state_dict()
        return state

    def save(self, kind: str) -> Path | None:
        """Write the epoch or step checkpoint (rank 0); refuses non-finite weights.

        The epoch checkpoint replaces ``checkpoint.pt`` and removes the step one.
        """
        t = self.trainer
        if not t.info.is_main or not t.logger.enabled:
            return None
        bad = non_finite_parameters(t.model)
        if bad:
            raise TrainingError(
                f"parameter {bad[0]} holds NaN/inf at epoch {t.epoch + 1}: training diverged;"
                f" lower optim.lr (the last good checkpoint is {t.run_dir / CHECKPOINT})"
            )
        if kind == "epoch":
            path = save_checkpoint(self.state_dict("epoch"), t.run_dir / CHECKPOINT)
            (t.run_dir / STEP_CHECKPOINT).unlink(missing_ok=True)
            return path
        return save_checkpoint(self.state_dict("step"), t.run_dir / STEP_CHECKPOINT)

    def load(self, state: dict[str, Any], path: Path) -> None:
        """Continue from a checkpoint of this run (see :meth:`state_dict`)."""
        t = self.trainer
        check_model_signature(state["model_signature"], t.signature, path)
        if int(state.get("num_classes", 0)) > 0:
            # a classifier head: the default builders' ReIDModel
            cast("ReIDModel", t.model).reset_classifier(int(state["num_classes"]), None)
            t.model.to(t.device)
        t.model.load_state_dict(state["model"])
        t.epoch = int(state["epoch"])
        t.step = int(state.get("step", 0))
        t.records = [dict(r) for r in state["records"]]
        t.scheduler.load_state_dict(state["scheduler"])
        t.scaler.load_state_dict(state["scaler"])
        if state.get("extract_precision"):
            t.extract_precision = Precision(*state["extract_precision"])
        hook_states = state.get("hooks")
        if hook_states is None:  # format 1 kept the report's data at the top level
            hook_states = {"ReportHook": {k: state[k] for k in ("embed", "final_labels")
                                          if k in state}}
        for hook in t.hooks:
            if type(hook).__name__ in hook_states:
                hook.load_state_dict(hook_states[type(hook).__name__])
        stage = t.label_stage
        if state["kind"] == "step":
            labels = PseudoLabels.from_state_dict(state["labels"])
            t.current = stage.resume(t.epoch, labels, state["method"], state["sampler"])
            t.stats = EpochStats.from_state_dict(state["stats"])
        elif "labels" in state and not t.method.needs_features:
            stage.restore_head(PseudoLabels.from_state_dict(state["labels"]), state["method"])
        else:
            # The classifier of the finished epoch (if any) is the head group being restored.
            t.optimizer.param_groups[1]["params"] = stage.model_head_parameters()
        if t.replay is not None and "source_replay" in state:
            t.replay.load_state_dict(state["source_replay"], t.epoch)
        t.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])

    def _hook_states(self) -> dict[str, Any]:
        out = {}
        for hook in self.trainer.hooks:
            hook_state = hook.state_dict()
            if hook_state:
                out[type(hook).__name__] = hook_state
        return out

    def _model_classes(self) -> int:
        fn = getattr(self.trainer.model, "num_classes", 0)
        return int(fn() if callable(fn) else fn or 0)
