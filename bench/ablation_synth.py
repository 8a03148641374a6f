"""SFE-CR ablation on the synthetic world, with ground-truth and with noisy masks.

Rows: supervised (upper bound), pul, rsl, cluster_contrast, +SFE only (sfe_cr with
method.cr=false and the global clustering on fused features), +CR only (method.sfe=false),
sfe_cr, sfe_cr (global_features=fused); then the camera-aware parts (method cap) alone
and combined: CA-Jaccard, per-camera standardisation, camera proxies, association; and
CA-Jaccard in cluster_contrast and in sfe_cr's global clustering on fused features.
``--mask-passes gt`` (or ``noisy``) runs the mask-dependent rows with the ground-truth
(or the noisy) masks only.
Every row starts from the same ImageNet weights and trains for the same epochs x steps
(batch 8 identities x 4 images), at each seed (run.seed and cluster.seed). Two mask
passes: the world's ground-truth masks (``masks.provider=synthetic``) and the same
degraded (``masks.noise=--mask-noise``). Only the rows whose labels depend on the masks
(+SFE only, sfe_cr, sfe_cr fused) differ between the passes; the others are trained once
and stand for both (+CR only reads the masks but does not use them: see bench/_runs.py).

Each (row, pass, seed) is its own run folder under --out, trained in a child process;
running the script again reads finished runs back from their metrics.jsonl and resumes
interrupted ones from their checkpoint. Writes bench/results/ablation_synth.json and
prints a Markdown table for docs/benchmarks.md.

    python bench/ablation_synth.py --set cluster.eps=0.5  # the table: 19 rows x 2 seeds
    python bench/ablation_synth.py --quick               # smoke: tiny world, 1-2 min
    python bench/ablation_synth.py --rows cluster_contrast,sfe_cr --seeds 0

Budget of the defaults (tf_efficientnet_lite0 at 128x64, 4 epochs x 40 steps of 8 x 4
images, no warm-up, seeds 0 and 1), measured (docs/benchmarks.md): the 26 runs of the 13
rows before the camera-aware ones took 2 h 0 min of one core in total (3.3-6.3 min each
with one thread beside another benchmark on the other core), so two invocations with
disjoint ``--rows`` side by side fit one sitting of about an hour. Per run: start-up and
the evaluations before and after, then per epoch the features of the 2,400 training
images (twice for the runs that read masks) and the clustering, and 40 steps. On a busy
machine runs take 2.5-4.5x as long; the script resumes, so later sittings finish the
table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from _runs import (
    CAMERA_ROWS,
    REPO,
    RESULTS,
    ROWS,
    TEST_CAMERA_NOTE,
    Column,
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
ESTIMATE = "2 h 0 min of one core for the 26 runs (measured; see the module docstring)"

# the variants' labels spelled as the config key, for the table
_LABELS = {"sfe_cr_fused": "sfe_cr (global_features=fused)",
           "sfe_cr_fg": "sfe_cr (global_features=foreground)"}
ROWS_SYNTH = [dataclasses.replace(r, label=_LABELS.get(r.key, r.label)) for r in ROWS
              if r.train] + list(CAMERA_ROWS)
QUICK = ("cluster.k1=10", "cluster.k2=3", "optim.num_identities=4", "optim.num_instances=4")
COLUMNS = (Column("mAP", "mAP"), Column("R1", "R1"), Column("R5", "R5"),
           Column("mINP", "mINP"), Column("mAP, test cameras standardised", "std_mAP"),
           Column("mAP, test camera BN", "cbn_mAP"), Column("label ARI", "ari", 1.0, 3),
           Column("multi-cam clusters %", "multi_camera_share"),
           Column("cross-cam pair precision %", "cross_camera_pair_precision"),
           Column("minutes", "minutes", 1.0, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: synth:quick, tiny_cnn, 2 epochs x 5 steps, seed 0")
    parser.add_argument("--world", default=None, help="a world folder (default synth:default)")
    parser.add_argument("--mask-noise", type=float, default=0.3, help="noisy pass masks.noise")
    parser.add_argument("--mask-passes", choices=("both", "gt", "noisy"), default="both",
                        help="rows that depend on the masks: both passes, GT masks only, or "
                             "noisy masks only")
    parser.add_argument("--pretrained", default=None, help="model.pretrained (imagenet)")
    add_common_args(parser, out="runs/ablation", seeds=(0, 1), epochs=EPOCHS, iters=ITERS)
    args = parser.parse_args(argv)
    q = args.quick
    world = f"synth:{'quick' if q else 'default'}"
    if args.world:
        world = str(Path(args.world).resolve())
    args.seeds = args.seeds or ([0] if q else [0, 1])
    args.epochs = args.epochs if args.epochs is not None else (2 if q else EPOCHS)
    args.iters = args.iters or (5 if q else ITERS)
    args.size = args.size or ((64, 32) if q else (128, 64))
    args.backbone = args.backbone or ("tiny_cnn" if q else "tf_efficientnet_lite0")
    args.pretrained = args.pretrained or ("none" if q else "imagenet")
    args.set = [*(QUICK if q else ()), *args.set]
    out = Path(args.out or REPO / "runs" / ("ablation-quick" if q else "ablation"))
    rows = select(ROWS_SYNTH, args.rows)
    if args.num_classes is None:
        args.num_classes = train_identity_count(world)

    data = [f"data.root={world}"]
    gt = [*data, "masks.provider=synthetic", "masks.noise=0.0"]
    noisy = [*data, "masks.provider=synthetic", f"masks.noise={args.mask_noise}"]
    noisy_name = f"noisy {args.mask_noise:g}"
    jobs = []
    for seed in args.seeds:  # seed-major: an interrupted sitting leaves whole tables
        for row in rows:
            folder = out / row.key
            if not row.mask_sensitive:
                jobs.append(make_job(row, args, seed, folder / f"seed{seed}",
                                     extra=gt if row.reads_masks else data))
                continue
            if args.mask_passes in ("both", "gt"):
                jobs.append(make_job(row, args, seed, out / f"{row.key}-gt" / f"seed{seed}",
                                     variant="GT", extra=gt))
            if args.mask_passes in ("both", "noisy"):
                jobs.append(make_job(row, args, seed, out / f"{row.key}-noise{args.mask_noise:g}"
                                     / f"seed{seed}", variant=noisy_name, extra=noisy))

    about = describe_dataset(world)
    outcomes = run_grid(jobs)
    table, result_rows = summary(outcomes, COLUMNS, "masks")
    header = (
        f"Synthetic world `{world}` ({about}); input {args.size[0]}x{args.size[1]}; "
        f"{args.backbone} ({args.pretrained} init); {budget_phrase(args)} per run; "
        f"seeds {' '.join(map(str, args.seeds))}. Command: "
        f"`{command_line('ablation_synth.py')}`"
    )
    notes = (
        f"masks: GT = the world's ground-truth masks, {noisy_name} = the same with "
        f"masks.noise={args.mask_noise:g}. Rows with – do not depend on the masks and were "
        "trained once for both passes (+CR only reads them, but with method.sfe=false "
        "sfe_cr makes its labels from F^x alone). +SFE only = no re-allocation, global "
        "clustering on the fused input + foreground features. "
        "mAP, R1, R5, mINP in %; label ARI and multi-cam clusters (share of pseudo-label "
        "clusters spanning >= 2 cameras) from the last epoch's labels; minutes = wall time "
        "of one run. Mean ± std (n-1) over seeds. "
        f"pul and rsl: {args.num_classes} k-means classes, cluster.min_selected="
        f"{args.min_selected:g}. {TEST_CAMERA_NOTE}"
    )
    markdown = f"{header}\n\n{table}\n\n{notes}"
    print("\n" + markdown + "\n")
    results = Path(args.results) if args.results else RESULTS / (
        "ablation_synth_quick.json" if q else "ablation_synth.json")
    write_results(results, {
        "bench": "ablation_synth", "header": header, "command": command_line("ablation_synth.py"),
        "world": world, "dataset": about, "size": list(args.size), "backbone": args.backbone,
        "pretrained": args.pretrained, "epochs": args.epochs, "iters": args.iters,
        "seeds": args.seeds, "num_classes": args.num_classes,
        "min_selected": args.min_selected, "mask_noise": args.mask_noise, "estimate": ESTIMATE,
        "rows": result_rows, "markdown": markdown,
    })
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
