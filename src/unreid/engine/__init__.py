"""The training engine: :func:`train` runs (or resumes) a run folder.

``train(cfg)`` creates ``cfg.run.out_dir`` with ``config.yaml``,
``metrics.jsonl``, ``checkpoint.pt`` (and ``checkpoint_step.pt`` mid-epoch),
``log.txt`` and the report; ``train(None, resume=RUN_DIR)`` continues it from
its last checkpoint. Under ``torchrun`` the same call runs DDP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from omegaconf import OmegaConf

from unreid.config import Config, config_from_dict, save_config, to_container, validate_config
from unreid.engine import distributed as ddp
from unreid.engine.checkpoint import (
    CHECKPOINT,
    STEP_CHECKPOINT,
    check_resume_config,
    load_checkpoint,
)
from unreid.engine.run_lock import with_run_lock
from unreid.errors import ConfigError
from unreid.io import first_line
from unreid.models.source import write_source_record

if TYPE_CHECKING:
    from unreid.engine.trainer import Builders, Trainer

__all__ = ["TrainResult", "train"]

# Settings that may change when a run is resumed (they do not change what is trained).
RESUMABLE = (
    "optim.epochs",
    "eval.",
    "run.out_dir",
    "run.device",
    "run.report",
    "run.checkpoint_",
    "data.root",
    "data.cache_dir",
)


@dataclass
class TrainResult:
    """What a run produced: its folder and its per-epoch records (``metrics.jsonl``)."""

    run_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    def evals(self) -> list[dict[str, Any]]:
        """Records that carry evaluation metrics, in epoch order."""
        return [r for r in self.records if "eval" in r]

    @property
    def initial(self) -> dict[str, Any] | None:
        ev = self.evals()
        return ev[0]["eval"] if ev else None

    @property
    def final(self) -> dict[str, Any] | None:
        ev = self.evals()
        return ev[-1]["eval"] if ev else None


@with_run_lock  # one training per run folder: a second one is refused at once
def train(
    cfg: Config | None,
    resume: str | Path | None = None,
    eval_only: bool = False,
    *,
    overrides: Sequence[str] = (),
    hooks: Sequence[Any] = (),
    trainer_class: type[Trainer] | None = None,
    builders: Builders | None = None,
) -> TrainResult:
    """Train ``cfg`` in ``cfg.run.out_dir``, or continue the run folder ``resume``.

    Args:
        cfg: resolved config; None with ``resume`` uses the run's own config.
        resume: a run folder; training continues from its newest checkpoint
            (mid-epoch when ``checkpoint_step.pt`` is newer). Settings other
            than those in ``RESUMABLE`` must not change (ConfigError).
        eval_only: evaluate the initial (or resumed) model, print the table, stop.
        overrides: ``key=value`` applied to the resumed run's config (e.g.
            ``optim.epochs=60`` to extend it).
        hooks: extra :class:`unreid.engine.hooks.HookBase` instances.
        trainer_class: a subclass of :class:`unreid.engine.trainer.Trainer` to run
            (e.g. one overriding ``build_optimizer``); default ``Trainer``.
        builders: :class:`unreid.engine.trainer.Builders`, the model, optimiser and
            LR-schedule factories, to swap one without subclassing.

    Returns:
        :class:`TrainResult`. Raises :class:`TrainingError` on divergence (the
        last good checkpoint is kept) or when clustering finds no cluster.
    """
    # Imported here, not at the top: eval, extract, search and export import
    # unreid.engine.checkpoint, which runs this file, and need none of the trainer's
    # scikit-learn and matplotlib (about 1.5 s of CPU at start-up).
    from unreid.engine.trainer import Trainer

    state, ckpt_path = None, None
    if resume is not None:
        run_dir = Path(resume)
        state, ckpt_path = _newest_checkpoint(run_dir)
        saved = state["config"] if state is not None else _saved_config(run_dir)
        if cfg is None:
            cfg = config_from_dict(saved)
            if overrides:
                cfg = _apply(cfg, overrides)
        # settings added to unreid after the run was made compare at their defaults
        check_resume_config(to_container(config_from_dict(saved)), to_container(cfg), run_dir,
                            RESUMABLE)
        cfg.run.out_dir = str(run_dir)
    else:
        if cfg is None:
            raise ConfigError("train() needs a config or resume=RUN_DIR")
        run_dir = Path(cfg.run.out_dir)
        if _newest_checkpoint(run_dir)[0] is not None and not eval_only:
            raise ConfigError(
                f"run.out_dir={run_dir} already holds a run: continue it with --resume {run_dir}"
                " or choose another run.out_dir"
            )
    validate_config(cfg)  # every value in range before anything is loaded or written

    owned = not _dist_initialized()
    info = ddp.init_distributed(cfg.run.device)
    try:
        source = None
        if info.is_main and not eval_only:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            if state is None:  # a new run records the weights it starts from
                source = write_source_record(str(cfg.model.pretrained), run_dir)
        trainer = (trainer_class or Trainer)(
            cfg, run_dir, info=info, hooks=list(hooks), log_to_disk=not eval_only,
            builders=builders,
        )
        if source is not None:
            trainer.log(f"started from {cfg.model.pretrained} (recorded in {source})")
        if state is not None and ckpt_path is not None:
            trainer.load_state_dict(state, ckpt_path)
            trainer.log(f"resumed {ckpt_path} at epoch {trainer.epoch + 1}, step {trainer.step}")
        if eval_only:
            result = trainer.evaluate()
            if result is not None:
                print(result.format_table())
                return TrainResult(run_dir, [{"epoch": trainer.epoch, "eval": result.as_dict()}])
            return TrainResult(run_dir)
        return TrainResult(run_dir, trainer.train())
    finally:
        if owned:
            ddp.cleanup_distributed()


def _dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _apply(cfg: Config, overrides: Sequence[str]) -> Config:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.epochs=60")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]
    except Exception as exc:
        raise ConfigError(f"--set: {first_line(exc)}") from None


def _saved_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"cannot resume {run_dir}: it has no checkpoint.pt and no config.yaml; pass the "
            "RUN_DIR of a training run"
        )
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def _newest_checkpoint(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest readable state of a run folder: the step checkpoint when it belongs
    to the epoch after the last finished one, else the epoch checkpoint."""
    epoch_path, step_path = run_dir / CHECKPOINT, run_dir / STEP_CHECKPOINT
    epoch_state = load_checkpoint(epoch_path) if epoch_path.is_file() else None
    if step_path.is_file():
        step_state = load_checkpoint(step_path)
        if epoch_state is None or step_state["epoch"] >= epoch_state["epoch"]:
            return step_state, step_path
    return epoch_state, epoch_path if epoch_state is not None else None
