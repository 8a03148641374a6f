"""Trainer hooks (detectron2 / fast-reid style): everything around the epoch loop.

The trainer calls, for every hook in registration order::

    before_train()
    for each epoch:   before_epoch()
        for each step:    before_step(); <step>; after_step()
        <record appended to trainer.records>
        after_epoch()
    after_train()

The default order matters and is fixed by :func:`default_hooks`: the LR
scheduler steps, the evaluator adds ``eval`` to the epoch's record, the label
health check adds ``health`` (and ``warnings``), the checkpointer saves (records
included), the metrics writer appends the line, the report hook keeps what the
report shows and writes it at the end. Hooks reach the run through
``self.trainer`` (set by the trainer when it registers them); a hook with state
of its own returns it from ``state_dict`` and it is saved in every checkpoint
(keyed by the hook's class name).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unreid import viz
from unreid.cluster import health_warnings, label_health
from unreid.cluster.health import run_verdict

if TYPE_CHECKING:
    from unreid.engine.trainer import Trainer

__all__ = [
    "CheckpointHook",
    "EvalHook",
    "HealthHook",
    "HookBase",
    "LRSchedulerHook",
    "MetricsHook",
    "ReportHook",
    "default_hooks",
]


class HookBase:
    """Override any of the six methods; ``self.trainer`` is the running trainer."""

    trainer: Trainer

    def state_dict(self) -> dict[str, Any]:
        """What the hook needs to continue after a resume (tensors, numbers, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

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


class HealthHook(HookBase):
    """Label health every epoch (:func:`unreid.cluster.label_health`): the epoch's record
    gets ``health`` and, for each number out of its sane range, a line in ``warnings``
    (also logged; none for a supervised method, whose labels are the truth). The previous
    epoch's labels (for the agreement score) are state, so a resumed run scores as the
    uninterrupted one. At the end one line says so when the run ends below its initial
    evaluation or with degenerate labels."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None

    def after_epoch(self) -> None:
        t = self.trainer
        labels = t.labels
        if labels is None or not t.info.is_main:
            return
        health = label_health(labels.labels, t.data.camids, self.previous,
                              has_cameras=bool(t.data.dataset.has_cameras))
        t.record["health"] = health
        # Ground-truth labels (supervised) are what they are: no clustering knob to suggest.
        lines = [] if t.method.supervised else \
            health_warnings(health, auto="auto" in (labels.info or {}),
                            labeller=t.method.labeller)
        if lines:
            t.record["warnings"] = lines
        auto = (labels.info or {}).get("auto")
        if isinstance(auto, dict):
            # the camera-aware graph reads the camera widths (in the reason), not k1 and k2
            graph = ("CA-Jaccard" if auto.get("jaccard") == "camera_aware"
                     else f"k1 {auto['k1']} k2 {auto['k2']}")
            t.log(f"cluster.auto: {graph} eps {auto['eps']:g} "
                  f"min_samples {auto['min_samples']}: {auto['reason']}")
        for line in lines:
            t.log(f"warning: epoch {t.epoch + 1}: {line}")
        self.previous = labels.labels.copy()

    def after_train(self) -> None:
        t = self.trainer
        if t.info.is_main:
            line = run_verdict(t.records, t.method.labeller)
            if line:
                t.log(line)

    def state_dict(self) -> dict[str, Any]:
        prev = self.previous
        return {"previous": None if prev is None else torch.from_numpy(prev.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prev = state.get("previous")
        self.previous = None if prev is None else prev.numpy()


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
    """The report's data: a fixed sample of the query/gallery features before training and
    at the end (t-SNE), the last finished epoch's labels, ranked lists of a few queries;
    at the end the arrays go to :func:`unreid.viz.save_report_data` and the report is
    written. Registered after :class:`EvalHook`, whose evaluations it reads."""

    def __init__(self, num_embedded: int = 600, num_queries: int = 6, top: int = 10) -> None:
        self.num_embedded = int(num_embedded)
        self.num_queries = int(num_queries)
        self.top = int(top)
        self.embed: dict[str, torch.Tensor] = {}
        self.final_labels: np.ndarray | None = None

    def before_train(self) -> None:
        if "before" not in self.embed:  # a resumed run evaluated nothing yet: kept from before
            self._keep_embedding("before")

    def after_epoch(self) -> None:
        labels = self.trainer.labels
        if labels is not None:
            self.final_labels = labels.labels.copy()

    def after_train(self) -> None:
        t = self.trainer
        if not t.info.is_main:
            return
        viz.save_report_data(t.run_dir, **self.report_arrays())
        index = viz.write_report(t.run_dir)
        t.log(f"report: {index}")

    def state_dict(self) -> dict[str, Any]:
        # Mid-epoch the epoch's labels are those it will finish with.
        labels = self.trainer.labels
        final = labels.labels if labels is not None else self.final_labels
        return {
            "embed": dict(self.embed),
            "final_labels": None if final is None else torch.from_numpy(final.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.embed = dict(state.get("embed") or {})
        final = state.get("final_labels")
        self.final_labels = None if final is None else final.numpy()

    def report_arrays(self) -> dict[str, Any]:
        """Arrays for :func:`unreid.viz.save_report_data` (final labels, ranked lists, t-SNE)."""
        t = self.trainer
        ds = t.data.dataset
        tr, q, g = ds.train, ds.query, ds.gallery
        out: dict[str, Any] = {
            "train_paths": np.asarray(tr.paths, dtype=str),
            "train_pids": np.asarray(tr.pids),
            "train_camids": np.asarray(tr.camids),
            "query_paths": np.asarray(q.paths, dtype=str),
            "gallery_paths": np.asarray(g.paths, dtype=str),
            "q_pids": np.asarray(q.pids),
            "g_pids": np.asarray(g.pids),
        }
        if self.final_labels is not None:
            out["train_labels"] = self.final_labels
        if t.last_eval_features is None:
            return out
        qf, gf = t.last_eval_features
        rows, pick = self._samples(len(qf), len(qf) + len(gf))
        dist = 1.0 - qf[torch.from_numpy(rows)] @ gf.T
        top = torch.topk(dist, min(self.top, len(gf)), dim=1, largest=False)
        out.update(ranked_query=rows, ranked_gallery=top.indices.numpy(),
                   ranked_dist=top.values.numpy())
        self._keep_embedding("after")
        out["embed_after"] = self.embed["after"].numpy()
        if "before" in self.embed:
            out["embed_before"] = self.embed["before"].numpy()
        out["embed_pids"] = np.concatenate([q.pids, g.pids])[pick]
        out["embed_camids"] = np.concatenate([q.camids, g.camids])[pick]
        return out

    def _keep_embedding(self, name: str) -> None:
        """Keep the fixed sample of the last evaluated features (rank 0) as ``name``."""
        feats = self.trainer.last_eval_features
        if feats is None:
            return
        both = torch.cat(feats)
        pick = self._samples(len(feats[0]), len(both))[1]
        self.embed[name] = both[torch.from_numpy(pick)].clone()

    def _samples(self, num_query: int, pool: int) -> tuple[np.ndarray, np.ndarray]:
        """The queries shown as ranked lists and the fixed sample of ``pool`` rows embedded."""
        return viz.select_report_samples(num_query, pool, num_ranked=self.num_queries,
                                         num_embed=self.num_embedded)


def default_hooks(cfg: Any) -> list[HookBase]:
    hooks: list[HookBase] = [
        LRSchedulerHook(),
        EvalHook(),
        HealthHook(),
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
