"""Adapting from a source model on the synthetic world: what keeps what the start knows.

The source is a supervised model trained with labels on a *differently seeded* world
(world seed 1: other people, other camera scenes; the "irrelevant labelled dataset" of
the PUL and RSL papers); the target is ``synth:default`` (world seed 0), its labels
hidden from every adapted row. Rows: the ImageNet start and the source model evaluated
without training (direct transfer), supervised on the target from the source (upper
bound), then pul, rsl and cluster_contrast adapted from the source, each at the
settings the rows' overrides name (the suspects of a lost start: learning rate, warm-up,
lambda and the min_selected floor, the soft-label temperature, the k-means class count,
the features clustered). Every trained row has the same budget (the ablation's 4 epochs
x 40 steps of 8 x 4 images by default) at each seed, at 64x32 input (a quarter of the
ablation's pixels, so a run takes minutes on a shared core: each epoch extracts the 2,400
training images, and RSL/PUL's loss of a good start shows at any input size).

The source run itself is the first job (same budget, from ImageNet, ``--source-epochs``
x ``--iters``), in ``--out``/source; like every row it is read back once finished.

    python bench/adapt_synth.py                                   # every row, seed 0
    python bench/adapt_synth.py --rows direct,pul,rsl,cluster_contrast
    python bench/adapt_synth.py --quick                           # smoke: tiny worlds

Writes bench/results/adapt_synth.json and prints a Markdown table (the selected-sample
columns: the share lambda alone keeps in the first and the last epoch, and the share kept
after the ``cluster.min_selected`` floor in the last one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _runs import (
    REPO,
    RESULTS,
    Column,
    Row,
    add_common_args,
    budget_phrase,
    command_line,
    describe_dataset,
    make_job,
    run_grid,
    select,
    summary,
    train_identity_count,
    write_results,
)

EPOCHS, ITERS = 4, 40
SOURCE_SEED = 1  # the source world's seed (the target, synth:default, is seed 0)

PUL, RSL, CC = ("method.name=pul",), ("method.name=rsl",), ("method.name=cluster_contrast",)
LOW_LR = ("optim.lr=3.5e-5",)
WARMUP = ("optim.warmup_epochs=1",)
BN = ("model.feature=bn",)
LAMBDA_ALONE = ("cluster.min_selected=0",)
# Rows from the source model; "imagenet" alone starts from the ImageNet weights.
ROWS_ADAPT: tuple[Row, ...] = (
    Row("imagenet", "ImageNet start (no training)", ("model.pretrained=imagenet", *CC),
        train=False),
    Row("direct", "source, direct transfer (no training)", CC, train=False),
    Row("supervised", "supervised on the target", ("method.name=supervised",)),
    Row("pul", "pul", PUL, kmeans=True),
    Row("rsl", "rsl", RSL, kmeans=True),
    Row("cluster_contrast", "cluster_contrast", CC),
    # the suspects, one at a time
    Row("pul_lr", "pul, lr x0.1", (*PUL, *LOW_LR), kmeans=True),
    Row("rsl_lr", "rsl, lr x0.1", (*RSL, *LOW_LR), kmeans=True),
    Row("cc_lr", "cluster_contrast, lr x0.1", (*CC, *LOW_LR)),
    Row("pul_warmup", "pul, 1 warm-up epoch", (*PUL, *WARMUP), kmeans=True),
    Row("rsl_warmup", "rsl, 1 warm-up epoch", (*RSL, *WARMUP), kmeans=True),
    Row("pul_alone", "pul, lambda alone (min_selected 0)", (*PUL, *LAMBDA_ALONE), kmeans=True),
    Row("rsl_alone", "rsl, lambda alone (min_selected 0)", (*RSL, *LAMBDA_ALONE), kmeans=True),
    Row("rsl_t", "rsl, soft temperature 0.1", (*RSL, "cluster.soft_temperature=0.1"),
        kmeans=True),
    Row("pul_bn", "pul, BN-neck features", (*PUL, *BN), kmeans=True),
    Row("rsl_bn", "rsl, BN-neck features", (*RSL, *BN), kmeans=True),
    Row("pul_m", "pul, K = identities / 2", (*PUL, "cluster.num_classes=75"), kmeans=True),
    Row("rsl_m", "rsl, M = identities / 2", (*RSL, "cluster.num_classes=75"), kmeans=True),
)
QUICK = ("cluster.k1=10", "cluster.k2=3", "optim.num_identities=4", "optim.num_instances=4")
COLUMNS = (Column("start mAP", "start_mAP"), Column("mAP", "mAP"), Column("R1", "R1"),
           Column("R5", "R5"), Column("R10", "R10"),
           Column("mINP", "mINP"), Column("label ARI", "ari", 1.0, 3),
           Column("multi-cam clusters %", "multi_camera_share"),
           Column("lambda alone % (epoch 1)", "above_lambda_first"),
           Column("lambda alone % (last)", "above_lambda_share"),
           Column("selected %", "selected_share"),
           Column("minutes", "minutes", 1.0, 1))


def source_world(quick: bool) -> Path:
    """The source world (seed 1, else the target's config), generated once in .cache/synth."""
    import dataclasses

    from unreid.data.synth import QUICK_CONFIG, SynthConfig, config_hash, generate_world

    cfg = dataclasses.replace(QUICK_CONFIG if quick else SynthConfig(), seed=SOURCE_SEED)
    target = REPO / ".cache" / "synth" / config_hash(cfg)
    if not (target / "world.json").is_file():
        generate_world(cfg, target, progress=False)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny worlds, tiny_cnn, 2 epochs x 5 steps")
    parser.add_argument("--source-epochs", type=int, default=None,
                        help="epochs of the source run (default: --epochs)")
    add_common_args(parser, out="runs/adapt-synth", seeds=(0,), epochs=EPOCHS, iters=ITERS)
    parser.set_defaults(rows=None)
    args = parser.parse_args(argv)
    q = args.quick
    world = f"synth:{'quick' if q else 'default'}"
    args.seeds = args.seeds or [0]
    args.epochs = args.epochs if args.epochs is not None else (2 if q else EPOCHS)
    args.iters = args.iters or (5 if q else ITERS)
    args.size = args.size or (64, 32)
    args.backbone = args.backbone or ("tiny_cnn" if q else "tf_efficientnet_lite0")
    args.set = [*(QUICK if q else ()), *args.set]
    out = Path(args.out or REPO / "runs" / ("adapt-synth-quick" if q else "adapt-synth"))
    if args.num_classes is None:
        args.num_classes = train_identity_count(world)

    # 1. the source model: supervised on the other world, from ImageNet (tiny_cnn: random)
    src_args = argparse.Namespace(**vars(args))
    src_args.pretrained = "none" if q else "imagenet"
    src_args.epochs = args.source_epochs or args.epochs
    src_world = source_world(q)
    src_row = Row("source", "source (supervised, world seed 1)", ("method.name=supervised",))
    src_job = make_job(src_row, src_args, 0, out / "source",
                       extra=[f"data.root={src_world}"])
    (src_out,) = run_grid([src_job])
    if src_out.status == "failed":
        return 1
    checkpoint = src_out.run_dir / "checkpoint.pt"

    # 2. the rows from it, on the target world
    args.pretrained = str(checkpoint)
    rows = select(ROWS_ADAPT, args.rows)
    if q:  # tiny_cnn has no ImageNet weights
        rows = [r for r in rows if r.key != "imagenet"]
    jobs = [make_job(row, args, seed, out / row.key / f"seed{seed}",
                     extra=[f"data.root={world}"])
            for seed in args.seeds for row in rows]
    outcomes = run_grid(jobs)
    table, result_rows = summary(outcomes, COLUMNS, None)
    src_eval = src_out.values
    header = (
        f"Target `{world}` ({describe_dataset(world)}); source: {args.backbone} supervised "
        f"on the world of seed {SOURCE_SEED} ({describe_dataset(str(src_world))}; "
        f"{src_args.epochs} x {args.iters} steps from {src_args.pretrained}; its own split "
        f"mAP {100 * src_eval.get('mAP', float('nan')):.1f}); input {args.size[0]}x"
        f"{args.size[1]}; {budget_phrase(args)} per trained row; seeds "
        f"{' '.join(map(str, args.seeds))}. Command: `{command_line('adapt_synth.py')}`"
    )
    notes = (
        "mAP, R1, R5, R10, mINP in %; label ARI and multi-cam clusters of the last epoch's "
        "labels; lambda alone = the share of the training images whose cosine to their "
        "(camera-)cluster centre passes lambda (first / last epoch), selected = the share "
        "kept after the cluster.min_selected floor (last epoch). Mean ± std (n-1) over "
        f"seeds. pul and rsl: {args.num_classes} k-means classes unless the row says "
        f"otherwise, cluster.min_selected={args.min_selected:g}."
    )
    markdown = f"{header}\n\n{table}\n\n{notes}"
    print("\n" + markdown + "\n")
    results = Path(args.results) if args.results else RESULTS / (
        "adapt_synth_quick.json" if q else "adapt_synth.json")
    write_results(results, {
        "bench": "adapt_synth", "header": header, "command": command_line("adapt_synth.py"),
        "world": world, "source_world": str(src_world), "source": src_out.as_dict(),
        "size": list(args.size), "backbone": args.backbone, "epochs": args.epochs,
        "iters": args.iters, "seeds": args.seeds, "num_classes": args.num_classes,
        "min_selected": args.min_selected, "rows": result_rows, "markdown": markdown,
    })
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
