"""A training run: the loop of :mod:`.loop` with a model, an optimiser and a method.

One epoch of :class:`Trainer`:

1. the label stage (:mod:`.label_stage`): features -> the method's labels
   (rank 0, broadcast) -> head -> sampler;
2. ``cfg.optim.iters`` steps: sampler -> gather uint8 images from the decoded
   cache -> to the device -> batch augmentation -> forward (AMP on CUDA) ->
   method loss (+ the labelled source batch's loss with ``source.root``:
   :mod:`.source_replay`) -> backward -> optimiser step;
3. hooks (:mod:`.hooks`): LR schedule, evaluation, checkpoint
   (:mod:`.checkpointer`), metrics line, report.

What is built can be swapped: pass :class:`Builders` (functions of the
config) or subclass and override :meth:`Trainer.build_model`,
:meth:`Trainer.build_optimizer`, :meth:`Trainer.build_lr_scheduler`.

Randomness is counter based (:func:`.loop.derive_seed`): the sampler's batches
and every step's augmentation/dropout seed derive from ``(run.seed, epoch,
step, rank)``, so a run resumed from any checkpoint continues exactly as the
uninterrupted run would have (on CPU, bit for bit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unreid.config import Config, to_container
from unreid.data.augment import build_augment
from unreid.data.roots import split_images
from unreid.engine import distributed as ddp
from unreid.engine.checkpoint import CHECKPOINT, model_signature
from unreid.engine.checkpointer import Checkpointer
from unreid.engine.hooks import HookBase, default_hooks
from unreid.engine.label_stage import EpochLabels, LabelStage, check_finite
from unreid.engine.logger import RunLogger
from unreid.engine.loop import TrainerBase, derive_seed
from unreid.engine.source_replay import SOURCE_AUGMENT_STREAM, SourceReplay, running_stats_kept
from unreid.engine.train_data import load_train_data
from unreid.errors import TrainingError
from unreid.eval import evaluate_split
from unreid.methods import PseudoLabels, build_method, model_feature
from unreid.methods.base import BatchSampler
from unreid.models import build_model as build_reid_model
from unreid.models import extract_feature_sets
from unreid.models.camera_bn import (
    BNStatistics,
    batch_norm_split,
    camera_batch_slices,
    camera_bn_statistics,
)
from unreid.models.precision import Precision, autocast, extraction_precision, resolve_precision

__all__ = [
    "Builders",
    "Trainer",
    "build_lr_scheduler",
    "build_model",
    "build_optimizer",
    "lr_factor",
]

_STEP = 2  # derive_seed tag of the steps' augmentation (and, +1, in-model) randomness


def lr_factor(epoch: int, *, warmup_epochs: int, warmup_factor: float, step_size: int,
              gamma: float) -> float:
    """LR multiplier of 0-based ``epoch``: linear warm-up from ``warmup_factor`` to 1 over
    ``warmup_epochs``, times ``gamma`` every ``step_size`` epochs."""
    warm = 1.0
    if epoch < warmup_epochs:
        warm = warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs
    decay = gamma ** (epoch // step_size) if step_size > 0 else 1.0
    return warm * decay


def build_model(cfg: Config, feature: str) -> nn.Module:
    """The re-id model of ``cfg.model`` retrieving ``feature`` (``bn`` or ``pool``)."""
    return build_reid_model(cfg.model, 0, feature=feature)


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (group 0) and a head group (group 1, the
    model classifier or a method's head parameters, swapped each epoch)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": params}, {"params": []}]
    return torch.optim.Adam(
        groups,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
    )


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: Config) -> Any:
    """Per-epoch schedule: :func:`lr_factor` of ``cfg.optim`` times the base rate."""
    o = cfg.optim

    def factor(epoch: int) -> float:
        return lr_factor(epoch, warmup_epochs=o.warmup_epochs, warmup_factor=o.warmup_factor,
                         step_size=o.step_size, gamma=o.gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class Builders:
    """The swappable parts of a run, each a function of the config.

    ``optimizer`` gets the bare model; a second, empty parameter group is added
    when it returns one group: the head's parameters go there each epoch.
    """

    model: Callable[[Config, str], nn.Module] = build_model
    optimizer: Callable[[nn.Module, Config], torch.optim.Optimizer] = build_optimizer
    lr_scheduler: Callable[[torch.optim.Optimizer, Config], Any] = build_lr_scheduler


class Trainer(TrainerBase):
    """Runs one training run in ``run_dir``; see the module docstring.

    Args:
        cfg: resolved config.
        run_dir: output folder (checkpoints, metrics.jsonl, config.yaml, report).
        info: DDP position (single process by default).
        hooks: extra hooks, called after the default ones.
        log_to_disk: False writes nothing (evaluation only, benchmarks).
        builders: model, optimiser and schedule factories (defaults: :class:`Builders`).

    Public state the hooks use, besides :class:`.loop.TrainerBase`'s: ``model``,
    ``optimizer``, ``scheduler``, ``method``, ``data``, ``labels`` and
    ``sampler`` (of the epoch in progress, else None), ``replay`` (the
    :class:`.source_replay.SourceReplay` with ``source.root``, else None), ``logger``,
    ``last_eval_features`` (the last evaluated query/gallery features, rank 0).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        *,
        info: ddp.DistInfo | None = None,
        hooks: Sequence[HookBase] = (),
        log_to_disk: bool = True,
        builders: Builders | None = None,
    ) -> None:
        self.info = info or ddp.DistInfo()
        super().__init__(cfg.optim.epochs, cfg.optim.iters, show_progress=self.info.is_main)
        self.cfg = cfg
        self.cfg_dict = to_container(cfg)
        self.builders = builders or Builders()
        self.run_dir = Path(run_dir)
        self.device = ddp.resolve_device(cfg.run.device, self.info)
        self.logger = RunLogger(self.run_dir, enabled=self.info.is_main and log_to_disk)
        if self.device.type == "cuda":
            det = bool(cfg.run.deterministic)
            torch.backends.cudnn.deterministic = det
            torch.backends.cudnn.benchmark = not det
        torch.manual_seed(derive_seed(cfg.run.seed, 0))

        self.method = build_method(cfg)
        self.data = load_train_data(cfg, self.info, uses_masks=self.method.uses_masks)
        # Resolved once, at the start: every checkpoint names it (inference needs no registry).
        self.model_feature = model_feature(cfg)
        self.model = self.build_model()
        self.signature = model_signature(self.model, self.cfg_dict)
        self.model.to(self.device)
        self.channels_last = bool(cfg.model.channels_last)  # build_model converted the weights
        self.optimizer = self.build_optimizer(self.model)
        if len(self.optimizer.param_groups) == 1:
            self.optimizer.add_param_group({"params": []})
        self.scheduler = self.build_lr_scheduler(self.optimizer)
        self.train_precision = resolve_precision(cfg.run.precision, self.device, "train")
        # decided at the first extraction (it checks the model's bf16 features); a resumed
        # run takes the first run's choice from the checkpoint
        self.extract_precision: Precision | None = None
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.train_precision.needs_grad_scaler
        )
        self.augment = build_augment(self.method.augment, cfg.data.height, cfg.data.width)
        self._generator = torch.Generator()
        self.replay = SourceReplay.from_config(cfg, self.info, self.device)
        if self.replay is not None:
            self.log(self.replay.describe())

        self.label_stage = LabelStage(
            self.method, self.data, self.model, self.optimizer, cfg=cfg, info=self.info,
            device=self.device, extract=self.extract,
            camera_statistics=self.camera_statistics, last_good=self.run_dir / CHECKPOINT,
        )
        self.checkpointer = Checkpointer(self)
        self.current: EpochLabels | None = None  # the label stage's output of this epoch
        self.last_eval_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eval_images: tuple[np.ndarray, np.ndarray] | None = None
        self._told_no_eval = False
        self._told_protocol = False
        self.register_hooks([*default_hooks(cfg), *hooks])

    # ------------------------------------------------------------ builders

    def build_model(self) -> nn.Module:
        return self.builders.model(self.cfg, self.model_feature)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.builders.optimizer(model, self.cfg)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        return self.builders.lr_scheduler(optimizer, self.cfg)

    # ------------------------------------------------------------ state

    @property
    def labels(self) -> PseudoLabels | None:
        return None if self.current is None else self.current.labels

    @property
    def sampler(self) -> BatchSampler | None:
        return None if self.current is None else self.current.sampler

    @property
    def net(self) -> nn.Module:
        """The module trained this epoch: the model, or its DDP wrapper."""
        return self.model if self.current is None else self.current.net

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def log(self, message: str) -> None:
        self.logger.info(message)

    def close(self) -> None:
        self.logger.close()

    # ------------------------------------------------------------ epoch

    def begin_epoch(self) -> None:
        assert self.stats is not None
        self.stats.lr = self.lr
        self.current = self.label_stage.run(self.epoch, self.stats)
        if self.replay is not None:
            start = time.perf_counter()
            self.replay.begin_epoch(self.epoch, lambda images: self.extract(images)[0])
            self.stats.add_seconds("extract", time.perf_counter() - start)
        self.model.train()

    def end_epoch(self) -> None:
        self.current = None
        if self.replay is not None:
            self.replay.end_epoch()

    def extract(
        self,
        images: np.ndarray,
        mask_sets: Sequence[np.ndarray | None] = (None,),
        *,
        camids: np.ndarray | None = None,
        camera_stats: Mapping[int, BNStatistics] | None = None,
    ) -> list[torch.Tensor]:
        """One (N, D) float32 CPU feature set per entry of ``mask_sets`` (None: the plain
        images), from one read of ``images`` (this rank's shard, then gathered). With
        ``camids`` (N,) and ``camera_stats`` (:meth:`camera_statistics`), each camera's
        images are extracted with its own BN statistics."""
        n = len(images)
        a, b = ddp.shard_bounds(n, self.info.rank, self.info.world_size)
        if self.extract_precision is None:
            self.extract_precision = self._decide_extract_precision(images)
        sets = extract_feature_sets(
            self.model,
            images[a:b],
            [None if m is None else m[a:b] for m in mask_sets],
            batch_size=int(self.cfg.eval.batch_size),
            device=self.device,
            progress=self.info.is_main,
            precision=self.extract_precision,
            groups=None if camids is None else np.asarray(camids)[a:b],
            group_stats=camera_stats,
        )
        comm = self.device if self.device.type == "cuda" else torch.device("cpu")
        return [ddp.gather_shards(f.float().cpu(), n, comm) for f in sets]

    def camera_statistics(
        self, image_sets: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> dict[int, BNStatistics]:
        """Camera-specific BN statistics of ``(images, camids)`` sets
        (:func:`unreid.models.camera_bn.camera_bn_statistics`): every rank reads all the
        images, so every rank holds the same statistics."""
        if self.extract_precision is None:
            self.extract_precision = self._decide_extract_precision(image_sets[0][0])
        return camera_bn_statistics(self.model, image_sets,
                                    batch_size=int(self.cfg.eval.batch_size),
                                    device=self.device, precision=self.extract_precision,
                                    progress=self.info.is_main)

    def _decide_extract_precision(self, images: np.ndarray) -> Precision:
        """Rank 0 decides (so every shard is extracted alike) and logs the choice."""
        choice = None
        if self.info.is_main:
            sample = torch.from_numpy(np.array(images[:64]))  # a copy: the cache is read-only
            choice = extraction_precision(self.cfg.run.precision, self.model, self.device,
                                          sample)
            self.log(f"precision: training {self.train_precision.name} "
                     f"({self.train_precision.reason}), extraction {choice.name} "
                     f"({choice.reason})")
        return ddp.broadcast_object(choice)

    # ------------------------------------------------------------ step

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, list[int] | None]:
        """The next target batch (:meth:`_augmented_batch` of the epoch's sampler) and, with
        ``camera.bn_train``, its camera slices (the batch is then sorted by camera)."""
        assert self.current is not None
        index = np.asarray(self.current.sampler.next_batch(), dtype=np.int64)
        slices = None
        if bool(self.cfg.camera.bn_train):
            order, slices = camera_batch_slices(self.data.camids[index])
            index = index[order]
        return (*self._augmented_batch(self.data.images, index, _STEP), slices)

    def _augmented_batch(self, images: np.ndarray, index: np.ndarray,
                         stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` of ``images`` augmented with this step's seed of ``stream``: (B, 3,
        H, W) float inputs (channels-last when the model is) and (B,) int64 ``index`` on the
        device."""
        index = np.asarray(index, dtype=np.int64)
        batch = torch.from_numpy(np.ascontiguousarray(images[index]))
        batch = batch.to(self.device, non_blocking=True)
        self._generator.manual_seed(
            derive_seed(self.cfg.run.seed, stream, self.epoch, self.step, self.info.rank)
        )
        x = self.augment(batch, self._generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(index).to(self.device, non_blocking=True)

    def run_step(self) -> float:
        """One optimisation step; returns the (rank-averaged) loss."""
        assert self.stats is not None
        x, index, camera_slices = self._batch()
        source = None
        if self.replay is not None:
            source = self._augmented_batch(self.replay.images, self.replay.next_index(),
                                           SOURCE_AUGMENT_STREAM)
        # Dropout and other in-model randomness: a per-step seed as well.
        torch.manual_seed(derive_seed(self.cfg.run.seed, _STEP + 1, self.epoch, self.step,
                                      self.info.rank))
        with autocast(self.device, self.train_precision):
            with batch_norm_split(self.model, camera_slices):
                out = self.net(x)
            terms = self.method.loss(out, index, ddp.all_gather_cat)
            if source is not None:
                assert self.replay is not None
                # A forward of its own (not one concatenated batch), normalised with its own
                # batch statistics and leaving BN's running statistics the target's; one
                # backward through both graphs.
                with running_stats_kept(self.model):
                    source_out = self.net(source[0])
                named_terms = terms if isinstance(terms, dict) else {"target": terms}
                terms = {**named_terms, "source": self.replay.loss(
                    source_out, source[1], ddp.all_gather_cat)}
        named = terms if isinstance(terms, dict) else {}
        loss = sum(named.values()) if named else terms
        assert isinstance(loss, torch.Tensor)
        values = torch.stack([loss.detach().float().reshape(())]
                             + [t.detach().float() for t in named.values()])
        if self.info.enabled:
            values = ddp.all_gather_cat(values[None]).mean(0)
        total, *parts = values.tolist()
        if not np.isfinite(total):
            raise TrainingError(
                f"the loss became {total} at epoch {self.epoch + 1} step "
                f"{self.step + 1}: training diverged; lower optim.lr (the last good checkpoint "
                f"is {self.run_dir / CHECKPOINT})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.stats.add_loss(total, dict(zip(named, parts, strict=True)))
        return total

    # ------------------------------------------------------------ evaluation

    def eval_images(self) -> tuple[np.ndarray, np.ndarray]:
        """Decoded query and gallery images (loaded at the first evaluation)."""
        if self._eval_images is None:
            main, ds = self.info.is_main, self.data.dataset
            self._eval_images = (split_images(ds.query, self.cfg, progress=main),
                                 split_images(ds.gallery, self.cfg, progress=main))
        return self._eval_images

    def evaluate(self) -> Any:
        """Query/gallery evaluation of the current model (result on rank 0, None elsewhere;
        None when the dataset has no query/gallery, e.g. a plain folder of footage)."""
        ds = self.data.dataset
        if len(ds.query) == 0 or len(ds.gallery) == 0:
            if not self._told_no_eval and self.info.is_main:
                self.log(f"note: {self.cfg.data.root} has no query/gallery split: training "
                         "runs without evaluation (label quality is still logged when known)")
            self._told_no_eval = True
            return None
        ddp.broadcast_module(self.model)
        q_images, g_images = self.eval_images()
        q_cams, g_cams = np.asarray(ds.query.camids), np.asarray(ds.gallery.camids)
        stats = (self.camera_statistics([(q_images, q_cams), (g_images, g_cams)])
                 if bool(self.cfg.camera.bn_test) else None)
        (qf,) = self.extract(q_images, camids=None if stats is None else q_cams,
                             camera_stats=stats)
        (gf,) = self.extract(g_images, camids=None if stats is None else g_cams,
                             camera_stats=stats)
        self.model.train()
        if not self.info.is_main:
            return None
        check_finite(torch.cat([qf, gf]), "query/gallery features", self.run_dir / CHECKPOINT)
        self.last_eval_features = (qf, gf)
        result = evaluate_split(qf, gf, ds, rerank=bool(self.cfg.eval.rerank),
                                max_rank=int(self.cfg.eval.max_rank),
                                standardize_cameras=bool(self.cfg.camera.standardize_test),
                                protocol=str(self.cfg.eval.protocol))
        if result.note and not self._told_protocol:
            self.log(result.note)
            self._told_protocol = True
        return result

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, kind: str) -> Path | None:
        """Write the ``epoch`` or ``step`` checkpoint (see :class:`.checkpointer.Checkpointer`)."""
        return self.checkpointer.save(kind)

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Continue from a checkpoint of this run."""
        self.checkpointer.load(state, path)
