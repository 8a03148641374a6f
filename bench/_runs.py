"""Shared parts of the training benchmarks (``ablation_synth.py``, ``real_cuhk03.py``).

- the rows as data (:data:`ROWS`: a method and its switches as dotted overrides);
- run-or-load: each (row, seed) trains in its own run folder, in a child process
  (``python -m unreid train --set ...``) so that its peak memory is its own; a run
  that finished is read back from its ``metrics.jsonl``, one that was interrupted is
  resumed from its checkpoint, so an interrupted sitting continues where it stopped;
- reading the final evaluation and the last ``label_quality`` of a run;
- mean +- std over seeds and the Markdown table.

Not a module of the library and never imported by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SIDECAR = "bench.json"  # per run folder: wall time and peak memory of every sitting
CHILD_LOG = "bench.log"  # per run folder: stdout + stderr of the child processes
# per run folder: the final model evaluated again with test-time camera normalisation
TEST_CAMERA = "test_camera.json"

# Settings that may differ between the run folder and this invocation without making the
# stored result stale (they do not change what is trained or measured).
IGNORED = ("run.out_dir", "run.device", "run.report", "run.checkpoint_", "data.cache_dir")


@dataclass(frozen=True)
class Row:
    """One table row: a method and its switches.

    Attributes:
        key: id for ``--rows`` and the run folder name.
        label: the row's name in the table.
        overrides: dotted config overrides of the row (on top of the shared budget).
        reads_masks: the method extracts foreground features, so the bench must give it
            a mask provider.
        mask_sensitive: its labels depend on the mask content, so it is re-run when the
            masks change (GT vs noisy); otherwise one run stands for every mask setting.
        train: False = evaluate the initial weights only (``unreid train --eval-only``, in
            :func:`eval_start`).
        kmeans: k-means methods (pul, rsl): the bench gives them ``cluster.num_classes``
            and ``cluster.min_selected`` (:func:`kmeans_overrides`).
    """

    key: str
    label: str
    overrides: tuple[str, ...] = ()
    reads_masks: bool = False
    mask_sensitive: bool = False
    train: bool = True
    kmeans: bool = False


SFE_CR = ("method.name=sfe_cr",)
# The ablation's parts: SFE = foreground features enter the clustering; CR = per-camera
# re-allocation. Without CR the only clustering left is the global one, so "+SFE only"
# clusters globally on the fused features (cr=false, global_features=fused); with
# cr=false and input features it would be cluster-contrast to the digit. "+CR only"
# re-allocates with local clusters on F^x (sfe=false): it reads no mask.
ROWS: tuple[Row, ...] = (
    Row("imagenet", "ImageNet init", ("method.name=cluster_contrast",), train=False),
    Row("supervised", "supervised", ("method.name=supervised",)),
    Row("pul", "pul", ("method.name=pul",), kmeans=True),
    Row("rsl", "rsl", ("method.name=rsl",), kmeans=True),
    Row("cluster_contrast", "cluster_contrast", ("method.name=cluster_contrast",)),
    Row("sfe_only", "+SFE only",
        (*SFE_CR, "method.cr=false", "method.global_features=fused"), reads_masks=True,
        mask_sensitive=True),
    Row("cr_only", "+CR only",
        (*SFE_CR, "method.sfe=false", "method.global_features=input"), reads_masks=True),
    Row("sfe_cr", "sfe_cr", (*SFE_CR, "method.global_features=input"),
        reads_masks=True, mask_sensitive=True),
    Row("sfe_cr_fused", "sfe_cr (fused)", (*SFE_CR, "method.global_features=fused"),
        reads_masks=True, mask_sensitive=True),
    # the global clustering on the foreground features alone (the demo's first recipe)
    Row("sfe_cr_fg", "sfe_cr (foreground)", (*SFE_CR, "method.global_features=foreground"),
        reads_masks=True, mask_sensitive=True),
)


# CAP (camera proxies, method cap) as the benches run it: the inter-camera loss starts after
# the first epoch, since CAP's epoch 5 would never come in a 3-4 epoch budget.
CAP = ("method.name=cap", "camera.inter_start_epoch=1")

# Camera-aware parts, each alone and combined (method cap; see unreid/methods/cap.py; the
# inter-camera loss from the second epoch: CAP). "alone" for a label option =
# cluster-contrast's memory (camera.proxies=false) with that option.
CAMERA_ROWS = (
    Row("ca_jaccard", "+CA-Jaccard only", (*CAP, "camera.proxies=false",
                                           "cluster.jaccard=camera_aware")),
    Row("cam_std", "+camera standardisation only", (*CAP, "camera.proxies=false",
                                                    "camera.standardize=true")),
    Row("cap", "cap (camera proxies)", CAP),
    Row("cap_assoc", "cap + association", (*CAP, "camera.associate=true")),
    Row("cap_caj", "cap + CA-Jaccard", (*CAP, "cluster.jaccard=camera_aware")),
    # eps and min_samples chosen on the CA-Jaccard distance every epoch (cluster.auto)
    Row("cap_caj_auto", "cap + CA-Jaccard, eps chosen on its distance",
        (*CAP, "cluster.jaccard=camera_aware", "cluster.auto=true")),
    # camera-specific BN statistics for the features that are clustered
    Row("cap_cbn", "cap + camera BN (labels)", (*CAP, "camera.bn=true")),
    # camera-based BN in training too: each camera's rows of a batch normalised on their own
    Row("cap_cbn_train", "cap + camera BN (training and labels)",
        (*CAP, "camera.bn=true", "camera.bn_train=true")),
    Row("cap_all", "cap + association + CA-Jaccard + standardisation",
        (*CAP, "camera.associate=true", "cluster.jaccard=camera_aware",
         "camera.standardize=true")),
    # CA-Jaccard in the other methods' clustering (sfe_cr: the global one, on fused features)
    Row("cc_caj", "cluster_contrast + CA-Jaccard",
        ("method.name=cluster_contrast", "cluster.jaccard=camera_aware")),
    Row("sfe_cr_fused_caj", "sfe_cr (fused) + CA-Jaccard",
        ("method.name=sfe_cr", "method.global_features=fused", "cluster.jaccard=camera_aware"),
        reads_masks=True, mask_sensitive=True),
)


def with_replay(row: Row, root: str | Path, weight: float = 1.0) -> Row:
    """``row`` trained with source replay (the labelled ``root`` beside the target:
    ``source.root``, ``source.weight``), as the opt-in row ``KEY_replay``."""
    return dataclasses.replace(
        row, key=f"{row.key}_replay", label=f"{row.label} + source replay",
        overrides=(*row.overrides, f"source.root={root}", f"source.weight={float(weight)}"))


def select(rows: Sequence[Row], spec: str | None, optional: Sequence[Row] = ()) -> list[Row]:
    """``--rows a,b``: the named subset of ``rows`` and of the opt-in ``optional`` rows (keys
    or labels), in table order, opt-in rows last; no ``spec``: ``rows``."""
    if not spec:
        return list(rows)
    pool = [*rows, *optional]
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    names = {r.key: r for r in pool} | {r.label: r for r in pool}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; use some of "
                         f"{', '.join(r.key for r in pool)}")
    picked = {names[w].key for w in wanted}
    return [r for r in pool if r.key in picked]


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """The settings every row shares: input size, initial weights, epochs x steps, the LR
    schedule, evaluation before and after training only.

    Schedule: no warm-up (a 1-epoch warm-up would spend a sixth of a 6-epoch budget at 1%
    of the LR), x0.1 for the last ``epochs // 4`` epochs (8 epochs: step_size 6, as the demo).
    """
    epochs = int(args.epochs)
    return [
        f"data.height={args.size[0]}",
        f"data.width={args.size[1]}",
        f"model.backbone={args.backbone}",
        f"model.pretrained={args.pretrained}",
        f"optim.epochs={epochs}",
        f"optim.iters={args.iters}",
        "optim.warmup_epochs=0",
        f"optim.step_size={max(1, epochs - epochs // 4)}",
        "eval.eval_every=0",
        "run.report=false",
        "run.checkpoint_minutes=5",
    ]


def budget_phrase(args: argparse.Namespace) -> str:
    """``6 epochs x 50 steps of 8 x 4 images`` for the table header."""
    from unreid.config import load_config

    o = load_config([], [*budget_overrides(args), *args.set]).optim
    return (f"{o.epochs} epoch{'s' * (o.epochs != 1)} x {o.iters} steps of "
            f"{o.num_identities} x {o.num_instances} images")


@dataclass(frozen=True)
class Job:
    """One run to make or read back: a row (in a mask ``variant``) at one seed."""

    label: str
    variant: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]
    train: bool = True


def kmeans_overrides(args: argparse.Namespace) -> list[str]:
    """What the k-means rows (pul, rsl) get on top of the budget: ``--num-classes`` k-means
    classes (the benches default it to the true identity count of the train split, as the
    papers' k for Market/Duke is close to theirs) and the ``--min-selected`` floor: on the
    features of an ImageNet-initialised network at 128x64, lambda = 0.85 alone keeps fewer
    samples than classes after one epoch (measured; docs/benchmarks.md)."""
    return [f"cluster.num_classes={args.num_classes}",
            f"cluster.min_selected={args.min_selected}"]


SOURCE_START = REPO / "configs" / "source" / "start.yaml"


def start_overrides(path: Path = SOURCE_START) -> list[str]:
    """The adaptation settings of a source-start config (configs/source/start.yaml) as
    dotted overrides, so a bench from a source model trains with the defaults the configs
    ship: every key but ``data.*`` and ``model.*`` (the input size is the bench's, the
    model settings the source checkpoint's) and those the bench's own flags set
    (``--num-classes``, ``--min-selected``: :func:`kmeans_overrides`)."""
    from omegaconf import OmegaConf

    flat: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat.append(f"{prefix[:-1]}={node}")

    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(loaded, dict)
    walk({k: v for k, v in loaded.items() if k not in ("data", "model", "_base_")}, "")
    flags = ("cluster.num_classes=", "cluster.min_selected=")
    return [item for item in flat if not item.startswith(flags)]


def make_job(row: Row, args: argparse.Namespace, seed: int, run_dir: Path,
             *, variant: str = "", extra: Sequence[str] = ()) -> Job:
    """Budget, :func:`kmeans_overrides` for k-means rows, then the row's own overrides (so a
    row may set its own class count or floor), ``extra`` (data, masks), the seed, and
    ``--set`` last."""
    overrides = [*budget_overrides(args), *(kmeans_overrides(args) if row.kmeans else ()),
                 *row.overrides, *extra,
                 f"run.seed={seed}", f"cluster.seed={seed}", *args.set]
    return Job(row.label, variant, seed, run_dir.resolve(), tuple(overrides), train=row.train)


def add_common_args(parser: argparse.ArgumentParser, *, out: str, seeds: Sequence[int],
                    epochs: int, iters: int) -> None:
    parser.add_argument("--rows", default=None,
                        help=f"comma-separated subset, of: {', '.join(r.key for r in ROWS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"run.seed (and cluster.seed) values (default {list(seeds)})")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {epochs}")
    parser.add_argument("--iters", type=int, default=None, help=f"steps per epoch ({iters})")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size (default 128 64)")
    parser.add_argument("--backbone", default=None, help="default tf_efficientnet_lite0")
    parser.add_argument("--out", default=None, help=f"run folders (default {out})")
    parser.add_argument("--results", default=None, help="JSON file (default bench/results/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every row, e.g. cluster.eps=0.5")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="k-means classes of pul/rsl (default: the train identity count)")
    parser.add_argument("--min-selected", type=float, default=0.3,
                        help="cluster.min_selected of pul/rsl (default 0.3)")


# ---------------------------------------------------------------- one run


@dataclass
class Outcome:
    """One (row, variant, seed) run: ``values`` holds the table's numbers (fractions)."""

    label: str
    variant: str
    seed: int
    run_dir: Path
    status: str  # loaded | trained | failed
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "run_dir": str(self.run_dir), "status": self.status,
                "values": self.values, "error": self.error}


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_eval(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The last evaluation of a run (``mAP``, ``R1``, ... as fractions), or None."""
    evals = [r["eval"] for r in records if "eval" in r]
    return evals[-1] if evals else None


def last_label_quality(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``label_quality`` of the last epoch that logged it ({} without ground truth)."""
    found = [r["label_quality"] for r in records if r.get("label_quality")]
    return found[-1] if found else {}


def finished(records: Sequence[dict[str, Any]], epochs: int) -> bool:
    return bool(records) and records[-1].get("epoch") == epochs and "eval" in records[-1]


def check_same_config(run_dir: Path, wanted: dict[str, Any]) -> None:
    """Stop when ``run_dir`` holds a run of another config (its numbers would be stale)."""
    from omegaconf import OmegaConf

    from unreid.config import Config
    from unreid.engine.checkpoint import config_differences

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    # A key added to the schema after the run was saved takes its default, which by the
    # project's rule keeps the old behaviour: such a run is still the same run.
    saved = OmegaConf.to_container(
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(saved_path)), resolve=True
    )
    diff = [k for k in config_differences(saved, wanted) if not k.startswith(IGNORED)]
    if diff:
        raise SystemExit(
            f"{run_dir} holds a run with other settings ({', '.join(diff[:4])}): pass another "
            "--out, or delete that folder to retrain it"
        )


def run_child(argv: Sequence[str], log: Path) -> dict[str, Any]:
    """Run ``argv`` (cwd = the repo, output appended to ``log``); returns its
    ``exit_code``, wall ``seconds``, ``cpu_seconds`` (user + system), ``peak_rss_mib``
    (maximum resident set of that child alone, from wait4) and ``interrupted`` (Ctrl-C)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {shlex.join(argv)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
        interrupted = False
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:  # Ctrl-C: stop the child too, keep its sitting's numbers
            interrupted = True
            proc.terminate()
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"exit_code": proc.returncode, "seconds": time.perf_counter() - start,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "interrupted": interrupted}


def run_or_load(job: Job) -> Outcome:
    """Read the run back when it finished, else train (or resume) it in a child process."""
    from unreid.config import load_config, to_container

    run_dir = job.run_dir
    overrides = [*job.overrides, f"run.out_dir={run_dir}"]
    cfg = load_config([], overrides)  # a typo fails here, before any child starts
    check_same_config(run_dir, to_container(cfg))
    status = "loaded"
    records = read_records(run_dir)
    done = final_eval(records) is not None if not job.train else finished(
        records, int(cfg.optim.epochs))
    if not done:
        from unreid.engine.checkpoint import CHECKPOINT, STEP_CHECKPOINT

        cmd = [sys.executable, "-m", "unreid", "train"]
        if not job.train:  # the initial weights evaluated: this module's eval-start
            cmd = [sys.executable, str(Path(__file__).resolve()), "eval-start"]
        elif (run_dir / CHECKPOINT).is_file() or (run_dir / STEP_CHECKPOINT).is_file():
            cmd += ["--resume", str(run_dir)]
        for item in overrides:
            cmd += ["--set", item]
        sitting = run_child(cmd, run_dir / CHILD_LOG)
        _append_sitting(run_dir, sitting)
        if sitting["interrupted"]:
            raise KeyboardInterrupt
        status = "trained"
        if sitting["exit_code"] != 0:
            return Outcome(job.label, job.variant, job.seed, run_dir, "failed",
                           error=_tail(run_dir / CHILD_LOG))
    records = read_records(run_dir)
    ev = final_eval(records) or {}
    quality = last_label_quality(records)
    values = {k: float(ev[k]) for k in ("mAP", "R1", "R5", "R10", "mINP") if k in ev}
    # the same run's evaluation before training (its start, on the features it retrieves
    # with: pul and rsl use pool5, the others the BN neck)
    first = next((r["eval"] for r in records if "eval" in r), {})
    if "mAP" in first:
        values["start_mAP"] = float(first["mAP"])
    for key in ("ari", "multi_camera_share", "cross_camera_pair_precision",
                "cross_camera_nn_share"):
        if isinstance(quality.get(key), int | float):
            values[key] = float(quality[key])
    # pul and rsl: the share of the training images they kept in the last epoch (after the
    # min_selected floor), and the share lambda alone passed in the first and last epochs
    infos = [r["info"] for r in records if isinstance(r.get("info"), dict)]
    n = quality.get("num_samples")
    if infos and n:
        kept = infos[-1].get("reliable", infos[-1].get("selected"))
        if isinstance(kept, int | float):
            values["selected_share"] = float(kept) / float(n)
        for key, info in (("above_lambda_first", infos[0]), ("above_lambda_share", infos[-1])):
            if isinstance(info.get("above_lambda"), int | float):
                values[key] = float(info["above_lambda"]) / float(n)
    values.update(_time_and_memory(run_dir, records))
    values.update(test_camera_values(run_dir, cfg, trained=job.train))
    return Outcome(job.label, job.variant, job.seed, run_dir, status, values)


# The table note of the test-time camera columns (both benches).
TEST_CAMERA_NOTE = (
    "mAP, test cameras standardised / test camera BN = the same final model evaluated "
    "again with the query and gallery features standardised per camera / with each "
    "camera's images extracted with BN statistics of that camera's query and gallery "
    "images (both transductive: they read the test cameras, no identity)."
)


def test_camera_values(run_dir: Path, cfg: Any, *, trained: bool) -> dict[str, float]:
    """The run's final model (its checkpoint; the initial weights for an untrained row)
    evaluated again on its query/gallery with test-time camera normalisation:
    ``std_mAP``/``std_R1`` with per-camera feature standardisation, ``cbn_mAP``/``cbn_R1``
    with camera-specific BN statistics of each camera's query and gallery images. Both use
    the test images' cameras but no identity (transductive, as camera-based BN does).
    Written once to the run folder's :data:`TEST_CAMERA` and read back after."""
    path = run_dir / TEST_CAMERA
    if path.is_file():
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    import torch

    from unreid.apps.inference import evaluate_model, load_model_from_checkpoint
    from unreid.engine.checkpoint import CHECKPOINT
    from unreid.io import atomic_write_text
    from unreid.methods import model_feature
    from unreid.models import build_model

    roots = cfg.data.root
    ds = _load_dataset(str(roots if isinstance(roots, str) else roots[0]))
    if len(ds.query) == 0 or len(ds.gallery) == 0:
        return {}
    # An untrained row builds its model here; any layer its weights do not cover (the
    # start of model.pretrained=none, say) is then initialised the same in every sitting.
    torch.manual_seed(0)
    if trained:
        model, cfg = load_model_from_checkpoint(run_dir / CHECKPOINT)
    else:
        model = build_model(cfg.model, 0, feature=model_feature(cfg)).eval()
    out: dict[str, float] = {}
    for name, std, cbn in (("std", True, False), ("cbn", False, True)):
        result = evaluate_model(model, cfg, ds, protocol=str(cfg.eval.protocol),
                                standardize_cameras=std, camera_bn=cbn)
        out[f"{name}_mAP"], out[f"{name}_R1"] = float(result.mAP), float(result.rank(1))
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    return out


def _append_sitting(run_dir: Path, sitting: dict[str, Any]) -> None:
    path = run_dir / SIDECAR
    data = json.loads(path.read_text()) if path.is_file() else {"sittings": []}
    data["sittings"].append(sitting)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _time_and_memory(run_dir: Path, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Wall minutes summed over the sittings (child start to exit) and their peak memory;
    without the sidecar, the trainer's own seconds from ``metrics.jsonl``."""
    path = run_dir / SIDECAR
    if path.is_file():
        sittings = json.loads(path.read_text())["sittings"]
        return {"minutes": sum(s["seconds"] for s in sittings) / 60.0,
                "cpu_minutes": sum(s.get("cpu_seconds", 0.0) for s in sittings) / 60.0,
                "peak_mib": max(s["peak_rss_mib"] for s in sittings)}
    seconds = sum(sum((r.get("seconds") or {}).values()) for r in records)
    return {"minutes": seconds / 60.0}


def _tail(log: Path, lines: int = 12) -> str:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join(text[-lines:])


def run_grid(jobs: Sequence[Job]) -> list[Outcome]:
    """:func:`run_or_load` every job, one at a time (the cores are not shared between rows)."""
    outcomes = []
    for i, job in enumerate(jobs, 1):
        name = f"{job.label}{f' [{job.variant}]' if job.variant else ''} seed {job.seed}"
        print(f"[{i}/{len(jobs)}] {name}: {job.run_dir}", flush=True)
        try:
            out = run_or_load(job)
        except KeyboardInterrupt:
            raise SystemExit("interrupted: run the same command again to continue (finished "
                             "runs are read back, this one resumes from its checkpoint)") from None
        if out.status == "failed":
            print(f"    FAILED (log {out.run_dir / CHILD_LOG}):\n{_indent(out.error or '')}",
                  flush=True)
        else:
            v = out.values
            print(f"    {out.status}: mAP {100 * v.get('mAP', float('nan')):.1f}  "
                  f"R1 {100 * v.get('R1', float('nan')):.1f}  {v['minutes']:.1f} min",
                  flush=True)
        outcomes.append(out)
    return outcomes


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.splitlines())


# ---------------------------------------------------------------- table


@dataclass(frozen=True)
class Column:
    """A table column: ``values[key] * scale`` with ``digits`` decimals."""

    title: str
    key: str
    scale: float = 100.0
    digits: int = 1


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1; None for one value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def format_cell(values: Sequence[float], scale: float, digits: int) -> str:
    if not values:
        return "–"
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def group(outcomes: Sequence[Outcome]) -> list[tuple[str, str, list[Outcome]]]:
    """(label, variant, its seeds' outcomes) in first-seen order."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.label, o.variant), []).append(o)
    return [(label, variant, runs) for (label, variant), runs in groups.items()]


def summary(outcomes: Sequence[Outcome], columns: Sequence[Column], variant_title: str | None
            ) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown table (mean ± std over the seeds that did not fail) and its JSON rows."""
    head = ["row"] + ([variant_title] if variant_title else []) + [c.title for c in columns]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] * (1 + bool(variant_title)) + ["---:"] * len(columns)) + "|"]
    rows = []
    for label, variant, runs in group(outcomes):
        ok = [o for o in runs if o.status != "failed"]
        cells = [format_cell([o.values[c.key] for o in ok if c.key in o.values], c.scale,
                             c.digits) for c in columns]
        failed = len(runs) - len(ok)
        name = label + (f" ({failed} of {len(runs)} seeds failed)" if failed else "")
        lines.append("| " + " | ".join([name] + ([variant or "–"] if variant_title else [])
                                       + cells) + " |")
        keys = sorted({k for o in ok for k in o.values})
        stats = {k: mean_std([o.values[k] for o in ok if k in o.values]) for k in keys}
        rows.append({"row": label, "variant": variant,
                     "mean": {k: m for k, (m, _) in stats.items()},
                     "std": {k: s for k, (_, s) in stats.items()},
                     "runs": [o.as_dict() for o in runs]})
    return "\n".join(lines), rows


@functools.cache  # a bench asks for the class count and the description: list once
def _load_dataset(root: str):
    from unreid.data import load_dataset
    from unreid.data.synth import default_world

    if root.startswith("synth:"):  # where the children (cwd = the repo) will find it
        path = default_world(quick=root == "synth:quick", cache_root=REPO / ".cache" / "synth")
    else:
        path = Path(root)
    return load_dataset(path)


def train_identity_count(root: str) -> int:
    """Distinct identities of the train split (the k-means rows' default class count)."""
    import numpy as np

    pids = _load_dataset(root).train.pids
    return len(np.unique(pids[pids >= 0]))


def describe_dataset(root: str) -> str:
    """One phrase on a dataset's size (``synth:`` worlds are generated here, once)."""
    import numpy as np

    ds = _load_dataset(root)
    t = ds.train
    return (f"{len(t)} train images of {len(np.unique(t.pids[t.pids >= 0]))} identities, "
            f"{len(np.unique(t.camids))} cameras; {len(ds.query)} queries, "
            f"{len(ds.gallery)} gallery images")


def eval_start(overrides: Sequence[str]) -> None:
    """Evaluate a config's initial weights (``unreid train --eval-only``) and record it in
    its run folder as a run would: ``config.yaml`` and one ``metrics.jsonl`` line
    ``{"epoch": 0, "eval": ...}``, so the table reads it back like a trained row (the
    schema wants ``optim.epochs >= 1``, so an untrained row keeps the budget's epochs)."""
    from unreid.config import load_config, save_config
    from unreid.engine import train

    cfg = load_config([], overrides)
    run_dir = Path(cfg.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = train(cfg, eval_only=True)
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in result.records))


def command_line(script: str) -> str:
    return shlex.join(["python", f"bench/{script}", *sys.argv[1:]])


def write_results(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written {path}")


if __name__ == "__main__":  # the child of an untrained row: eval-start --set KEY=VALUE ...
    parsed = argparse.ArgumentParser(prog="_runs.py")
    parsed.add_argument("command", choices=["eval-start"])
    parsed.add_argument("--set", action="append", default=[])
    eval_start(parsed.parse_args().set)
