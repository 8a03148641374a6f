"""Every method on real data: CUHK03 (detected boxes), one row per method.

Rows: ImageNet init (the initial weights evaluated, no training: ``optim.epochs=0``),
supervised, pul, rsl, cluster_contrast, +SFE only, +CR only, sfe_cr, sfe_cr (fused);
all from the same ImageNet tf_efficientnet_lite0 weights, at the same input size, epochs
and steps, at each seed. The data is read in place from ../shared/data/cuhk03-detected
(nothing is copied into the repo; the decoded-image cache is .cache/images). The mask
rows train on foreground masks made once by the mediapipe provider with
``precompute_masks`` into .cache/cuhk03-masks (skipped when that folder has its
masks.json; without mediapipe the mask rows are left out, and the table says so).

Each row runs in its own child process (``python -m unreid train``) in its own run
folder under --out, so its peak memory (wait4 ru_maxrss) is its own; running the script
again reads finished rows back from metrics.jsonl and resumes interrupted ones. Writes
bench/results/real_cuhk03.json and prints a Markdown table for docs/benchmarks.md.

    python bench/real_cuhk03.py --set cluster.eps=0.5    # the table: 9 rows x 2 seeds
    python bench/real_cuhk03.py --rows imagenet,cluster_contrast --epochs 1 --iters 2

From a source model (a checkpoint of a supervised run on another labelled set, e.g.
``unreid train --config configs/source/peta_reid.yaml``): ``--pretrained PATH`` makes the
adaptation table (:data:`SOURCE_ROWS`): the ImageNet start and the source model evaluated
untrained ("direct transfer"), supervised on the target, then pul, rsl,
cluster_contrast, sfe_cr (paper), sfe_cr (fused) and cap, each trained from the source.
The model settings (backbone, pooling, last stride) are the source run's; the run folders
and JSON default to runs/cuhk03-source and bench/results/real_cuhk03_source.json. pul and
rsl also report the share of the training images lambda alone keeps (first and last epoch)
beside the share kept after the ``--min-selected`` floor:

    python bench/real_cuhk03.py --pretrained runs/source/peta_reid/checkpoint.pt \
        --set cluster.eps=0.5                              # 9 rows x 2 seeds

Opt-in rows (only with ``--rows``), in both tables: the camera-aware parts each alone and
combined (``ca_jaccard``, ``cam_std``, ``cap_assoc``, ``cap_caj``, ``cap_all``, ``cc_caj``,
``sfe_cr_fused_caj``; ``cap`` is opt-in from ImageNet, a default row from a source; the
synthetic ablation's ``_runs.CAMERA_ROWS``). In the adaptation table also
``cluster_contrast_replay`` and ``cap_replay``, the same rows with source replay
(``source.root`` = ``--replay-root``, default ../shared/data/peta-reid,
``source.weight=1.0``: the labelled source keeps training beside the target;
configs/source/replay.yaml). Each step then has a second forward and
backward, and the run starts by extracting the 12,917 source images once:

    python bench/real_cuhk03.py --pretrained runs/source/peta_reid/checkpoint.pt \
        --set cluster.eps=0.5 --rows cluster_contrast,cluster_contrast_replay,cap,cap_replay

Budget of the defaults (tf_efficientnet_lite0 at 128x64, 3 epochs x 80 steps of 8 x 4
images, seeds 0 and 1 = 18 runs), measured (docs/benchmarks.md): the 18 runs took 2 h 30
min of one core in total, each with one thread beside another benchmark on the other
core, so two invocations with disjoint ``--rows`` side by side fit one 2-hour sitting.
Once: mediapipe masks of the 8,177 images, 29 s (3.5 ms per image), and the decoded-image
cache, ~20 s, paid by the first row. Per row: start-up and the two evaluations ~0.4 min
(ImageNet init is only this), then per epoch the features of the 7,239 training images
(twice for the mask rows, which also extract F^g) and the clustering, and 80 steps.
The script resumes, so an interrupted table finishes in a later sitting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from _runs import (
    CAMERA_ROWS,
    CAP,
    REPO,
    RESULTS,
    ROWS,
    TEST_CAMERA_NOTE,
    Column,
    Row,
    add_common_args,
    budget_phrase,
    command_line,
    describe_dataset,
    make_job,
    run_grid,
    select,
    start_overrides,
    summary,
    train_identity_count,
    with_replay,
    write_results,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03-detected"
REPLAY_SOURCE = DATA.parent / "peta-reid"  # the labelled source of the source-replay rows
MASKS = REPO / ".cache" / "cuhk03-masks"
EPOCHS, ITERS = 3, 80
ESTIMATE = "2 h 30 min of one core for the 18 runs (measured; see the module docstring)"
COLUMNS = (Column("start mAP", "start_mAP"), Column("mAP", "mAP"), Column("R1", "R1"),
           Column("R5", "R5"), Column("R10", "R10"),
           Column("mAP, test cameras standardised", "std_mAP"),
           Column("mAP, test camera BN", "cbn_mAP"),
           Column("mINP", "mINP"), Column("label ARI", "ari", 1.0, 3),
           Column("multi-cam clusters %", "multi_camera_share"),
           Column("cross-cam pair precision %", "cross_camera_pair_precision"),
           Column("cross-view NN %", "cross_camera_nn_share"),
           Column("lambda alone % (epoch 1)", "above_lambda_first"),
           Column("lambda alone % (last)", "above_lambda_share"),
           Column("selected %", "selected_share"),
           Column("minutes", "minutes", 1.0, 1),
           Column("peak memory GiB", "peak_mib", 1 / 1024, 2))


# The rows; the foreground-only variant is left out (on the synthetic world it is
# below the fused one, and mediapipe's foreground alone is worse than the images here).
CUHK03_ROWS = [r for r in ROWS if r.key != "sfe_cr_fg"]
# From a source model (--pretrained PATH), the adaptation table: both starts evaluated
# untrained, the supervised bound, then every method adapted from the source (the mask
# ablation rows +SFE only / +CR only are the ImageNet table's), and the camera-aware cap.
_BY_KEY = {r.key: r for r in ROWS}
SOURCE_ROWS = [
    dataclasses.replace(_BY_KEY["imagenet"], label="ImageNet start (no training)",
                        overrides=("model.pretrained=imagenet", "method.name=cluster_contrast")),
    Row("direct", "source, direct transfer (no training)", ("method.name=cluster_contrast",),
        train=False),
    dataclasses.replace(_BY_KEY["supervised"], label="supervised on the target"),
    *(_BY_KEY[k] for k in ("pul", "rsl", "cluster_contrast")),
    dataclasses.replace(_BY_KEY["sfe_cr"], label="sfe_cr (paper)"),
    _BY_KEY["sfe_cr_fused"],
    Row("cap", "cap (camera proxies)", CAP),
]
# Opt-in (--rows) rows of the adaptation table: these two methods with source replay.
REPLAY_KEYS = ("cluster_contrast", "cap")


def replay_rows(root: str | Path) -> list[Row]:
    """``KEY_replay`` of :data:`REPLAY_KEYS`: the adaptation rows with the labelled ``root``
    replayed beside the target at ``source.weight=1.0``."""
    by_key = {r.key: r for r in SOURCE_ROWS}
    return [with_replay(by_key[k], Path(root).resolve(), 1.0) for k in REPLAY_KEYS]


def opt_in_rows(replay_root: str | Path, from_source: bool) -> list[Row]:
    """Rows only ``--rows`` runs: the camera-aware parts (:data:`_runs.CAMERA_ROWS`, each
    alone and combined; ``cap`` is a default row of the source table), and from a source
    the replay rows."""
    camera = [r for r in CAMERA_ROWS if not (from_source and r.key == "cap")]
    return [*camera, *(replay_rows(replay_root) if from_source else ())]


def ensure_masks(data: Path) -> str | None:
    """Make the mediapipe masks of every image in ``MASKS`` unless there; a note on them for
    the table, or None without mediapipe."""
    done = MASKS / "masks.json"
    if not done.is_file():
        try:
            import mediapipe  # noqa: F401
        except ImportError:
            print("mediapipe is not importable (pip install unreid[masks]): the mask rows "
                  "(+SFE only, +CR only, sfe_cr, sfe_cr (fused)) are skipped")
            return None
        from unreid.data import load_dataset
        from unreid.masks import precompute_masks

        print(precompute_masks("mediapipe", load_dataset(data), MASKS))
    m = json.loads(done.read_text())
    return (f"masks: mediapipe, {m['count']} in {MASKS.relative_to(REPO)} (mean foreground "
            f"{100 * m['mean_foreground']:.0f}%, {100 * m['empty'] / max(m['count'], 1):.1f}% "
            f"empty -> unmasked, {m['ms_per_image']:.1f} ms per image)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="CUHK03 folder (Market layout)")
    parser.add_argument("--pretrained", default="imagenet",
                        help="model.pretrained: imagenet, or a source checkpoint PATH")
    parser.add_argument("--replay-root", default=str(REPLAY_SOURCE),
                        help="labelled source set of the opt-in rows cluster_contrast_replay "
                             "and cap_replay (with --pretrained PATH)")
    add_common_args(parser, out="runs/cuhk03", seeds=(0, 1), epochs=EPOCHS, iters=ITERS)
    args = parser.parse_args(argv)
    args.seeds = args.seeds or [0, 1]
    args.epochs = args.epochs if args.epochs is not None else EPOCHS
    args.iters = args.iters or ITERS
    args.size = args.size or (128, 64)
    args.backbone = args.backbone or "tf_efficientnet_lite0"
    data = Path(args.data).resolve()
    source, source_overrides = None, []
    if args.pretrained not in ("imagenet", "none"):
        from unreid.models.source import describe_source, source_model_overrides

        args.pretrained = str(Path(args.pretrained).resolve())
        source = describe_source(args.pretrained)
        # the source's model settings, then the adaptation defaults the source-start
        # configs ship (configs/source/start.yaml)
        source_overrides = [*source_model_overrides(args.pretrained), *start_overrides()]
        args.backbone = (source.model or {}).get("backbone", args.backbone)
    suffix = "-source" if source else ""
    out = Path(args.out or REPO / "runs" / f"cuhk03{suffix}")
    rows = select(SOURCE_ROWS if source else CUHK03_ROWS, args.rows,
                  optional=opt_in_rows(args.replay_root, source is not None))
    if args.num_classes is None:
        # k-means classes of pul/rsl: the true 743 rounded down, as the RSL paper takes 700
        # for Duke's 702 identities
        args.num_classes = 100 * (train_identity_count(str(data)) // 100)

    masks_note = "no mask rows"
    if any(r.reads_masks for r in rows):
        masks_note = ensure_masks(data) or "mask rows skipped: mediapipe is not importable"
        if not (MASKS / "masks.json").is_file():
            rows = [r for r in rows if not r.reads_masks]
    base = [*source_overrides, f"data.root={data}"]
    masks = [*base, "masks.provider=png", f"masks.mask_dir={MASKS}"]
    jobs = [make_job(row, args, seed, out / row.key / f"seed{seed}",
                     extra=masks if row.reads_masks else base)
            for seed in args.seeds for row in rows]

    about = describe_dataset(str(data))
    outcomes = run_grid(jobs)
    table, result_rows = summary(outcomes, COLUMNS, None)
    start = f"{args.pretrained} init"
    if source:
        own = source.eval or {}
        start = (f"every row from the source model {source.path} (sha256 "
                 f"{source.sha256[:12]}, {source.method} on {', '.join(source.data_roots)}; "
                 f"its own split mAP {100 * own.get('mAP', float('nan')):.1f})")
    header = (
        f"CUHK03 detected ({about}); input {args.size[0]}x{args.size[1]}; {args.backbone} "
        f"({start}); {budget_phrase(args)} per trained row; "
        f"seeds {' '.join(map(str, args.seeds))}; {masks_note}. Command: "
        f"`{command_line('real_cuhk03.py')}`"
    )
    notes = (
        "mAP, R1, R5, R10, mINP in % (Market-1501 protocol on the dataset's query / "
        "gallery folders); label ARI of the last epoch's pseudo-labels against the "
        "true training identities; minutes = wall time of the row's process (start-up, "
        "image decoding on the first row, training and both evaluations); peak memory = "
        "its maximum resident set (wait4 ru_maxrss, includes the memory-mapped image "
        "cache pages it touched). Mean ± std (n-1) over seeds. Cross-cam pair precision = "
        "the share of the last labels' same-cluster pairs from two cameras that are one "
        "person; cross-view NN = the share of training images whose nearest image from the "
        "other camera is the same person, on the features the last labels came from. "
        f"pul and rsl: {args.num_classes} k-means classes, cluster.min_selected="
        f"{args.min_selected:g}; lambda alone % = the share of the training images whose "
        "cosine to their (camera-)cluster centre passed lambda, in the first and the last "
        "epoch; selected % = the share kept after the min_selected floor in the last epoch "
        "(rsl: reliable, the rest soft-labelled). start mAP = the row's own evaluation "
        "before training (pul and rsl retrieve with pool5 features, the others with the "
        f"BN neck). {TEST_CAMERA_NOTE}"
    )
    markdown = f"{header}\n\n{table}\n\n{notes}"
    print("\n" + markdown + "\n")
    default_results = RESULTS / f"real_cuhk03{suffix.replace('-', '_')}.json"
    write_results(Path(args.results) if args.results else default_results, {
        "bench": "real_cuhk03", "header": header, "command": command_line("real_cuhk03.py"),
        "data": str(data), "dataset": about, "masks": masks_note, "size": list(args.size),
        "backbone": args.backbone, "pretrained": args.pretrained, "epochs": args.epochs,
        "iters": args.iters, "seeds": args.seeds,
        "num_classes": args.num_classes, "min_selected": args.min_selected,
        "estimate": ESTIMATE, "source": source.as_dict() if source else None,
        "rows": result_rows, "markdown": markdown,
    })
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
