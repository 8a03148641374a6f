"""The epoch loop: features -> pseudo-labels -> head -> ``iters`` steps, with hooks.

One epoch of :class:`Trainer`:

1. extract L2-normalised features of every training image (eval mode, no
   augmentation; foreground features ``x * mask`` too when the method
   ``uses_masks``); under DDP each rank extracts a shard, then all gather;
2. the method makes the epoch's labels on rank 0; they are broadcast;
3. the method rebuilds its head (cluster memory from the cluster means, or
   the model's classifier) and its sampler;
4. ``cfg.optim.iters`` steps: sampler -> gather uint8 images from the decoded
   cache -> to the device -> batch augmentation -> forward (AMP on CUDA) ->
   method loss -> backward -> Adam step;
5. hooks: LR schedule, evaluation, checkpoint, metrics line (see :mod:`.hooks`).

Randomness is counter based: the sampler's batches and every step's
augmentation/dropout seed derive from ``(run.seed, epoch, step, rank)``, so a
run resumed from any checkpoint continues exactly as the uninterrupted run
would have (on CPU, bit for bit).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unreid import __version__
from unreid.config import Config, to_container
from unreid.data.roots import load_run_dataset, split_images
from unreid.engine import distributed as ddp
from unreid.engine.checkpoint import (
    CHECKPOINT,
    STEP_CHECKPOINT,
    check_model_signature,
    get_rng_state,
    model_signature,
    non_finite_parameters,
    save_checkpoint,
    set_rng_state,
)
from unreid.engine.hooks import HookBase
from unreid.engine.logger import RunLogger, progress
from unreid.errors import TrainingError
from unreid.eval import evaluate_split
from unreid.methods import LabelInputs, PseudoLabels, build_method, model_feature

__all__ = ["Trainer", "build_optimizer", "build_scheduler", "derive_seed", "lr_factor"]

# Random stream tags for derive_seed.
_SAMPLER, _STEP = 1, 2


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (independent streams for different tuples)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2,
               dtype=np.uint64)[0] >> np.uint64(1))


def lr_factor(epoch: int, *, warmup_epochs: int, warmup_factor: float, step_size: int,
              gamma: float) -> float:
    """LR multiplier of 0-based ``epoch``: linear warm-up from ``warmup_factor`` to 1 over
    ``warmup_epochs``, times ``gamma`` every ``step_size`` epochs."""
    warm = 1.0
    if epoch < warmup_epochs:
        warm = warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs
    decay = gamma ** (epoch // step_size) if step_size > 0 else 1.0
    return warm * decay


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (group 0) and a head group (group 1, the
    model classifier or a method's head parameters, swapped each epoch)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(
        [{"params": params}, {"params": []}],
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config) -> Any:
    o = cfg.optim

    def factor(epoch: int) -> float:
        return lr_factor(epoch, warmup_epochs=o.warmup_epochs, warmup_factor=o.warmup_factor,
                         step_size=o.step_size, gamma=o.gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Runs one training run in ``run_dir``; see the module docstring.

    Args:
        cfg: resolved config.
        run_dir: output folder (checkpoints, metrics.jsonl, config.yaml, report).
        info: DDP position (single process by default).
        hooks: extra hooks, called after the default ones.

    Public state the hooks use: ``epoch`` (0-based epoch in progress),
    ``step`` (steps done in it), ``records`` (one dict per logged epoch; the
    current one is ``record``), ``model``, ``optimizer``, ``scheduler``,
    ``method``, ``labels``, ``logger``.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        *,
        info: ddp.DistInfo | None = None,
        hooks: list[HookBase] | tuple[HookBase, ...] = (),
        log_to_disk: bool = True,
    ) -> None:
        from unreid.data.augment import build_augment
        from unreid.models import build_model

        self.cfg = cfg
        self.cfg_dict = to_container(cfg)
        self.run_dir = Path(run_dir)
        self.info = info or ddp.DistInfo()
        self.device = ddp.resolve_device(cfg.run.device, self.info)
        self.logger = RunLogger(self.run_dir, enabled=self.info.is_main and log_to_disk)
        self._configure_backends()
        torch.manual_seed(derive_seed(cfg.run.seed, 0))

        self.method = build_method(cfg)
        self._load_data()

        self.model = build_model(cfg.model, 0, feature=model_feature(cfg))
        self.signature = model_signature(self.model, self.cfg_dict)
        self._base_params = {id(p) for p in self.model.parameters()}
        self.model.to(self.device)
        self.channels_last = bool(cfg.model.channels_last) and self.device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net: nn.Module = self.model  # DDP wrapper when distributed
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.amp = bool(cfg.run.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.augment = build_augment(self.method.augment, cfg.data.height, cfg.data.width)
        self._generator = torch.Generator()

        self.epoch = 0
        self.step = 0
        self.records: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}
        self.labels: PseudoLabels | None = None
        self.sampler: Any = None
        self._stats: dict[str, Any] = self._fresh_stats()
        self._embed: dict[str, torch.Tensor] = {}
        self._eval_feats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._final_labels: np.ndarray | None = None  # labels of the last finished epoch
        self._told_no_eval = False

        from unreid.engine.hooks import default_hooks

        self.hooks: list[HookBase] = []
        for hook in [*default_hooks(cfg), *hooks]:
            hook.trainer = self
            self.hooks.append(hook)

    # ------------------------------------------------------------------ setup

    def _configure_backends(self) -> None:
        if self.device.type == "cuda":
            det = bool(self.cfg.run.deterministic)
            torch.backends.cudnn.deterministic = det
            torch.backends.cudnn.benchmark = not det

    def _load_data(self) -> None:
        cfg = self.cfg
        main = self.info.is_main
        self.dataset = load_run_dataset(cfg)
        train = self.dataset.train
        if len(train) == 0:
            raise TrainingError(f"the train split of {cfg.data.root} is empty: check data.root")
        # Rank 0 fills the decoded cache first so ranks do not race to write it.
        if main:
            self.train_images = split_images(train, cfg, progress=main)
        ddp.barrier()
        if not main:
            self.train_images = split_images(train, cfg, progress=False)
        self._eval_images: tuple[np.ndarray, np.ndarray] | None = None
        self.train_masks = None
        if self.method.uses_masks:
            from unreid.masks import build_mask_provider, load_masks

            m = cfg.masks
            provider = build_mask_provider(
                m.provider, mask_dir=m.mask_dir, noise=m.noise, allow_missing=m.allow_missing,
                dataset_root=self.dataset.root,
            )
            self.train_masks = load_masks(
                list(train.paths), provider, cfg.data.height, cfg.data.width,
                cfg.data.cache_dir or None, images=self.train_images, progress=main,
            )
        pids = np.asarray(train.pids)
        self.true_pids = pids if (pids >= 0).all() else None

    def eval_images(self) -> tuple[np.ndarray, np.ndarray]:
        if self._eval_images is None:
            main = self.info.is_main
            self._eval_images = (
                split_images(self.dataset.query, self.cfg, progress=main),
                split_images(self.dataset.gallery, self.cfg, progress=main),
            )
        return self._eval_images

    # ------------------------------------------------------------------ logging

    def log(self, message: str) -> None:
        self.logger.info(message)

    # ------------------------------------------------------------------ loop

    def call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)()

    def train(self) -> list[dict[str, Any]]:
        """Run (or continue) training to ``cfg.optim.epochs``; returns the records."""
        try:
            self.call("before_train")
            while self.epoch < self.cfg.optim.epochs:
                self.run_epoch()
            self.call("after_train")
        finally:
            self.logger.close()
        return self.records

    def run_epoch(self) -> None:
        cfg = self.cfg
        self.call("before_epoch")
        if self.labels is None:  # else resumed mid-epoch with the epoch's labels
            self._stats = self._fresh_stats()
            self.prepare_epoch()
        self.model.train()
        start = time.perf_counter()
        bar = progress(total=cfg.optim.iters, desc=f"epoch {self.epoch + 1}",
                       enabled=self.info.is_main)
        bar.update(self.step)
        while self.step < cfg.optim.iters:
            self.call("before_step")
            loss = self.run_step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            self._add_seconds("train", time.perf_counter() - start)
            start = time.perf_counter()
            self.call("after_step")
        bar.close()
        self.record = self._epoch_record()
        self.records.append(self.record)
        self.call("after_epoch")
        self.epoch += 1
        self.step = 0
        self.labels = None
        self.sampler = None

    def _fresh_stats(self) -> dict[str, Any]:
        """The per-epoch accumulators (loss sums, named terms, seconds, the epoch's lr)."""
        return {"loss_sum": 0.0, "terms": {}, "seconds": {}, "lr": self.lr}

    def _add_seconds(self, key: str, value: float) -> None:
        secs = self._stats["seconds"]
        secs[key] = secs.get(key, 0.0) + value

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ epoch setup

    def extract(self, images: np.ndarray, masks: np.ndarray | None = None) -> torch.Tensor:
        """(N, D) float32 CPU features of ``images`` (this rank's shard, then gathered)."""
        from unreid.models import extract_features

        n = len(images)
        a, b = ddp.shard_bounds(n, self.info.rank, self.info.world_size)
        feats = extract_features(
            self.model,
            images[a:b],
            batch_size=int(self.cfg.eval.batch_size),
            device=self.device,
            masks=None if masks is None else masks[a:b],
            progress=self.info.is_main,
        )
        comm = self.device if self.device.type == "cuda" else torch.device("cpu")
        return ddp.gather_shards(feats.float().cpu(), n, comm)

    def prepare_epoch(self) -> None:
        """Features -> labels (rank 0, broadcast) -> head -> sampler."""
        cfg, e = self.cfg, self.epoch
        ddp.broadcast_module(self.model)  # same BN statistics on every rank
        start = time.perf_counter()
        feats = self.extract(self.train_images)
        fg = None
        if self.method.uses_masks:
            fg = self.extract(self.train_images, self.train_masks)
        _check_finite(feats, f"features of the training images at epoch {e + 1}", self)
        if fg is not None:
            _check_finite(fg, f"foreground features at epoch {e + 1}", self)
        self._add_seconds("extract", time.perf_counter() - start)

        start = time.perf_counter()
        outcome: Any = None
        if self.info.is_main:
            inputs = LabelInputs(
                features=feats,
                fg_features=fg,
                camids=np.asarray(self.dataset.train.camids),
                has_cameras=bool(self.dataset.has_cameras),
                true_pids=self.true_pids if self.method.supervised else None,
                epoch=e,
            )
            self.method.note_no_cameras(inputs.has_cameras)
            try:
                outcome = self.method.make_labels(inputs)
            except Exception as exc:  # every rank must stop, not only rank 0
                outcome = exc
        outcome = ddp.broadcast_object(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        self.labels = outcome
        self._add_seconds("cluster", time.perf_counter() - start)
        self._stats["labels"] = self._label_stats(self.labels)
        self.attach_head(feats.to(self.device))
        seed = derive_seed(cfg.run.seed, _SAMPLER, e)
        self.sampler = self.method.sampler(
            self.labels, seed=seed, rank=self.info.rank, world_size=self.info.world_size
        )

    def attach_head(self, features: torch.Tensor | None) -> None:
        """Build the method's head for ``self.labels``, give its parameters to the
        optimiser's head group (fresh Adam state), and (re)wrap DDP."""
        assert self.labels is not None
        self.method.build_head(self.model, self.labels, features)
        head_params = [
            p for p in self.model.parameters() if id(p) not in self._base_params and p.requires_grad
        ]
        if self.method.head is not None:
            head_params += [p for p in self.method.head.parameters() if p.requires_grad]
        group = self.optimizer.param_groups[1]
        for p in group["params"]:
            self.optimizer.state.pop(p, None)
        group["params"] = head_params
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

    def _label_stats(self, labels: PseudoLabels) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "num_clusters": int(labels.num_classes),
            "num_outliers": labels.num_outliers,
        }
        if labels.info:
            stats["info"] = dict(labels.info)
        if self.true_pids is not None and self.info.is_main:
            from unreid.cluster import label_quality

            stats["label_quality"] = label_quality(
                labels.labels, self.true_pids, np.asarray(self.dataset.train.camids)
            )
        return stats

    # ------------------------------------------------------------------ step

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(self.sampler.next_batch(), dtype=np.int64)
        images = torch.from_numpy(np.ascontiguousarray(self.train_images[index]))
        images = images.to(self.device, non_blocking=True)
        self._generator.manual_seed(
            derive_seed(self.cfg.run.seed, _STEP, self.epoch, self.step, self.info.rank)
        )
        x = self.augment(images, self._generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(index).to(self.device, non_blocking=True)

    def run_step(self) -> float:
        """One optimisation step; returns the (rank-averaged) loss."""
        x, index = self._batch()
        # Dropout and other in-model randomness: a per-step seed as well.
        torch.manual_seed(derive_seed(self.cfg.run.seed, _STEP + 1, self.epoch, self.step,
                                      self.info.rank))
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.net(x)
            terms = self.method.loss(out, index, ddp.all_gather_cat)
        if isinstance(terms, dict):
            loss = sum(terms.values())
            values = torch.stack([loss.detach().float()] + [t.detach().float()
                                                            for t in terms.values()])
        else:
            loss, values = terms, terms.detach().float().reshape(1)
        if self.info.enabled:
            values = ddp.all_gather_cat(values[None]).mean(0)
        values_list = values.tolist()
        if not np.isfinite(values_list[0]):
            raise TrainingError(
                f"the loss became {values_list[0]} at epoch {self.epoch + 1} step "
                f"{self.step + 1}: training diverged; lower optim.lr (the last good checkpoint "
                f"is {self.run_dir / CHECKPOINT})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._stats["loss_sum"] += values_list[0]
        if isinstance(terms, dict):
            acc = self._stats["terms"]
            for name, v in zip(terms, values_list[1:], strict=True):
                acc[name] = acc.get(name, 0.0) + v
        return values_list[0]

    def _epoch_record(self) -> dict[str, Any]:
        steps = max(int(self.cfg.optim.iters), 1)
        stats = self._stats
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "loss": stats["loss_sum"] / steps,
            "lr": stats["lr"],
        }
        if stats["terms"]:
            record["losses"] = {k: v / steps for k, v in stats["terms"].items()}
        record.update(stats.get("labels", {}))
        record["seconds"] = dict(stats["seconds"])
        return record

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> Any:
        """Query/gallery evaluation of the current model (result on rank 0, None elsewhere;
        None when the dataset has no query/gallery, e.g. a plain folder of footage)."""
        if len(self.dataset.query) == 0 or len(self.dataset.gallery) == 0:
            if not self._told_no_eval and self.info.is_main:
                self.log(f"note: {self.cfg.data.root} has no query/gallery split: training "
                         "runs without evaluation (label quality is still logged when known)")
            self._told_no_eval = True
            return None
        ddp.broadcast_module(self.model)
        q_images, g_images = self.eval_images()
        qf = self.extract(q_images)
        gf = self.extract(g_images)
        self.model.train()
        if not self.info.is_main:
            return None
        _check_finite(torch.cat([qf, gf]), "query/gallery features", self)
        self._eval_feats = (qf, gf)
        return evaluate_split(qf, gf, self.dataset, rerank=bool(self.cfg.eval.rerank),
                              max_rank=int(self.cfg.eval.max_rank))

    def keep_embedding(self, name: str) -> None:
        """Keep a fixed sample of the last evaluated features for the report's t-SNE."""
        if self._eval_feats is None:
            return
        qf, gf = self._eval_feats
        pick = self._embed_index(len(qf) + len(gf))
        self._embed[name] = torch.cat([qf, gf])[torch.from_numpy(pick)].clone()

    @staticmethod
    def _embed_index(n: int, num: int = 600) -> np.ndarray:
        return np.sort(np.random.default_rng(0).permutation(n)[: min(num, n)])

    def report_arrays(self) -> dict[str, Any]:
        """Arrays for :func:`unreid.viz.save_report_data` (final labels, ranked lists, t-SNE)."""
        tr, q, g = self.dataset.train, self.dataset.query, self.dataset.gallery
        out: dict[str, Any] = {
            "train_paths": np.asarray(tr.paths, dtype=str),
            "train_pids": np.asarray(tr.pids),
            "train_camids": np.asarray(tr.camids),
            "query_paths": np.asarray(q.paths, dtype=str),
            "gallery_paths": np.asarray(g.paths, dtype=str),
            "q_pids": np.asarray(q.pids),
            "g_pids": np.asarray(g.pids),
        }
        if self._final_labels is not None:
            out["train_labels"] = self._final_labels
        if self._eval_feats is not None:
            qf, gf = self._eval_feats
            rows = np.unique(np.linspace(0, len(qf) - 1, num=min(6, len(qf))).astype(np.int64))
            k = min(10, len(gf))
            dist = 1.0 - qf[torch.from_numpy(rows)] @ gf.T
            top = torch.topk(dist, k, dim=1, largest=False)
            out.update(ranked_query=rows, ranked_gallery=top.indices.numpy(),
                       ranked_dist=top.values.numpy())
            self.keep_embedding("after")
            pick = self._embed_index(len(qf) + len(gf))
            out["embed_after"] = self._embed["after"].numpy()
            if "before" in self._embed:
                out["embed_before"] = self._embed["before"].numpy()
            out["embed_pids"] = np.concatenate([q.pids, g.pids])[pick]
            out["embed_camids"] = np.concatenate([q.camids, g.camids])[pick]
        return out

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, kind: str) -> dict[str, Any]:
        """Everything needed to continue: ``kind`` "epoch" (after a finished epoch) or
        "step" (mid-epoch: with the epoch's labels, sampler and running stats)."""
        num_classes = self._model_classes()
        state: dict[str, Any] = {
            "format": 1,
            "kind": kind,
            "unreid_version": __version__,
            "config": self.cfg_dict,
            "model_signature": self.signature,
            "epoch": self.epoch + 1 if kind == "epoch" else self.epoch,
            "step": self.step if kind == "step" else 0,
            "model": self.model.state_dict(),
            "num_classes": num_classes,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "rng": get_rng_state(),
            "records": [dict(r) for r in self.records],
            "embed": dict(self._embed),
            "final_labels": None,
        }
        if self.labels is not None:
            state["final_labels"] = torch.from_numpy(self.labels.labels.copy())
        if kind == "step":
            assert self.labels is not None and self.sampler is not None
            state["labels"] = self.labels.state_dict()
            state["sampler"] = self.sampler.state_dict()
            state["stats"] = _plain(self._stats)
        return state

    def _model_classes(self) -> int:
        fn = getattr(self.model, "num_classes", 0)
        return int(fn() if callable(fn) else fn or 0)

    def save_checkpoint(self, kind: str) -> Path | None:
        """Write the epoch or step checkpoint (rank 0); refuses non-finite weights."""
        if kind == "epoch" and self.labels is not None:
            self._final_labels = self.labels.labels.copy()
        if not self.info.is_main or not self.logger.enabled:
            return None
        bad = non_finite_parameters(self.model)
        if bad:
            raise TrainingError(
                f"parameter {bad[0]} holds NaN/inf at epoch {self.epoch + 1}: training diverged;"
                f" lower optim.lr (the last good checkpoint is {self.run_dir / CHECKPOINT})"
            )
        if kind == "epoch":
            path = save_checkpoint(self.state_dict("epoch"), self.run_dir / CHECKPOINT)
            (self.run_dir / STEP_CHECKPOINT).unlink(missing_ok=True)
            return path
        return save_checkpoint(self.state_dict("step"), self.run_dir / STEP_CHECKPOINT)

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Continue from a checkpoint of this run (see :meth:`state_dict`)."""
        check_model_signature(state["model_signature"], self.signature, path)
        if int(state.get("num_classes", 0)) > 0:
            self.model.reset_classifier(int(state["num_classes"]), None)
            self.model.to(self.device)
        self.model.load_state_dict(state["model"])
        self.epoch = int(state["epoch"])
        self.step = int(state.get("step", 0))
        self.records = [dict(r) for r in state["records"]]
        self._embed = dict(state.get("embed") or {})
        final = state.get("final_labels")
        self._final_labels = None if final is None else final.numpy()
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if state["kind"] == "step":
            self.labels = PseudoLabels.from_state_dict(state["labels"])
            self.attach_head(None)
            self.method.load_state_dict(state["method"])
            seed = derive_seed(self.cfg.run.seed, _SAMPLER, self.epoch)
            self.sampler = self.method.sampler(
                self.labels, seed=seed, rank=self.info.rank, world_size=self.info.world_size
            )
            self.sampler.load_state_dict(state["sampler"])
            self._stats = state["stats"]
        else:
            # The classifier of the finished epoch (if any) is the head group being restored.
            head = [p for p in self.model.parameters() if id(p) not in self._base_params]
            self.optimizer.param_groups[1]["params"] = [p for p in head if p.requires_grad]
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])


def _check_finite(x: torch.Tensor, what: str, trainer: Trainer) -> None:
    if not torch.isfinite(x).all():
        raise TrainingError(
            f"{what} contain NaN/inf: the model diverged; lower optim.lr (the last good "
            f"checkpoint is {trainer.run_dir / CHECKPOINT})"
        )


def _plain(value: Any) -> Any:
    """Nested dict/list of plain Python numbers (weights_only-safe, JSON-able)."""
    from unreid.engine.logger import jsonable

    return jsonable(value)
