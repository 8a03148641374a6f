"""The label round on the demo world: where its time goes, and what bf16 extraction changes.

For one network (the ImageNet initialisation, or a trained ``--checkpoint``) on the
training images of the default synthetic world (the demo's data):

1. **Profile of one label round** as the demo runs it: input and foreground features of
   every training image from one read of the decoded images
   (:func:`unreid.models.extract_feature_sets`), fused, then Jaccard + DBSCAN with the
   demo's settings. cProfile's cumulative seconds for the parts: reading and converting
   image batches, the network's forward passes, the kNN, the Jaccard distance, DBSCAN.
2. **bf16 against fp32 extraction** (channels-last both): per-image cosine between the
   two feature sets, the labels the clustering makes from each (clusters, ARI between
   them, samples whose cluster differs after matching each bf16 cluster to the fp32
   cluster holding most of its samples), and the query/gallery mAP of each.

    python bench/label_round.py --out bench/results/label_round_imagenet.json
    python bench/label_round.py --checkpoint runs/demo --out bench/results/label_round_demo.json
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _memory import write_json
from sklearn.metrics import adjusted_rand_score

from unreid.apps.demo import demo_config
from unreid.apps.inference import load_model_from_checkpoint
from unreid.cluster import jaccard_dbscan
from unreid.data import load_dataset, load_images
from unreid.data.synth import default_world
from unreid.eval import evaluate_features
from unreid.masks import build_mask_provider, load_masks
from unreid.models import build_model, extract_feature_sets, extract_features
from unreid.models.precision import Precision

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# The parts of a label round: cProfile's (file suffix, function) whose cumulative time
# they are (the forward's entry is the outermost module call, the largest of its entries).
PARTS = {
    "read + convert batches": ("extract.py", "_batch"),
    "network forward": ("module.py", "_call_impl"),
    "Jaccard distance (with its kNN)": ("jaccard.py", "jaccard_distance"),
    "  of which the kNN": ("knn.py", "knn"),
    "DBSCAN": ("dbscan.py", "dbscan"),
}


def changed_samples(reference: np.ndarray, other: np.ndarray) -> int:
    """Samples of ``other`` whose cluster is not the ``reference`` cluster holding most of
    that cluster's samples (outliers, -1, are a cluster of their own here)."""
    changed = 0
    for c in np.unique(other):
        members = reference[other == c]
        counts = np.unique(members, return_counts=True)[1]
        changed += len(members) - int(counts.max())
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None,
                        help="a trained run (checkpoint.pt or its folder); default ImageNet")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=str(RESULTS / "label_round.json"))
    args = parser.parse_args(argv)

    cfg = demo_config("unused")
    h, w = int(cfg.data.height), int(cfg.data.width)
    k1, k2 = int(cfg.cluster.k1), int(cfg.cluster.k2)
    eps, min_samples = float(cfg.cluster.eps), int(cfg.cluster.min_samples)
    if args.checkpoint:
        model, _ = load_model_from_checkpoint(args.checkpoint)
        name = f"checkpoint {args.checkpoint}"
    else:
        model = build_model(cfg.model)  # channels-last, as training builds it
        name = f"{cfg.model.backbone} (ImageNet)"

    root = default_world(quick=False)
    ds = load_dataset(root)
    images = load_images(ds.train.paths, h, w)
    masks = load_masks(ds.train.paths, build_mask_provider("synthetic", dataset_root=root),
                       h, w, images=images)

    def label_round(precision: Precision) -> tuple[torch.Tensor, np.ndarray]:
        plain, fg = extract_feature_sets(model, images, [None, masks],
                                         batch_size=args.batch_size, progress=False,
                                         precision=precision)
        fused = F.normalize(plain + fg, dim=1)
        return fused, jaccard_dbscan(fused, k1=k1, k2=k2, eps=eps, min_samples=min_samples)

    # 1. profile of one fp32 label round
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    feats32, labels32 = label_round(Precision("fp32"))
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    parts = dict.fromkeys(PARTS, 0.0)
    for (file, _line, func), (_cc, _nc, _tt, cum, _callers) in stats.stats.items():
        for part, (suffix, name) in PARTS.items():
            if file.endswith(suffix) and func == name:
                parts[part] = max(parts[part], cum)

    # 2. bf16 against fp32
    start = time.perf_counter()
    feats16, labels16 = label_round(Precision("bf16"))
    bf16_seconds = time.perf_counter() - start
    cos = (feats32 * feats16).sum(dim=1)
    q_paths, g_paths = ds.query.paths, ds.gallery.paths
    q_img, g_img = load_images(q_paths, h, w), load_images(g_paths, h, w)
    maps = {}
    for prec in ("fp32", "bf16"):
        p = Precision(prec)
        qf = extract_features(model, q_img, batch_size=args.batch_size, progress=False,
                              precision=p)
        gf = extract_features(model, g_img, batch_size=args.batch_size, progress=False,
                              precision=p)
        res = evaluate_features(qf, gf, ds.query.pids, ds.gallery.pids, ds.query.camids,
                                ds.gallery.camids)
        maps[prec] = {"mAP": 100 * res.mAP, "R1": 100 * float(res.cmc[0])}

    def clusters(labels: np.ndarray) -> int:
        return len(np.unique(labels[labels >= 0]))

    result = {
        "bench": "label_round", "model": name, "size": [h, w], "images": len(images),
        "clustering": {"k1": k1, "k2": k2, "eps": eps, "min_samples": min_samples},
        "profile_seconds": {"total": total, **parts},
        "bf16_label_round_seconds": bf16_seconds,
        "cosine_min": float(cos.min()), "cosine_median": float(cos.median()),
        "images_below_0.999": int((cos < 0.999).sum()),
        "clusters_fp32": clusters(labels32), "clusters_bf16": clusters(labels16),
        "label_ari": float(adjusted_rand_score(labels32, labels16)),
        "samples_changed": changed_samples(labels32, labels16),
        "eval": maps,
    }
    lines = [f"{name}, demo world train split ({len(images)} images) at {h}x{w}. Command: "
             f"`python bench/label_round.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             "", "| part of the fp32 label round | seconds | share |", "|---|---:|---:|"]
    for part, sec in parts.items():
        lines.append(f"| {part} | {sec:.1f} | {100 * sec / total:.0f} % |")
    lines.append(f"| total | {total:.1f} | 100 % |")
    lines += ["", "| | fp32 | bf16 |", "|---|---:|---:|",
              f"| label round seconds | {total:.1f} | {bf16_seconds:.1f} |",
              f"| clusters | {result['clusters_fp32']} | {result['clusters_bf16']} |",
              f"| query/gallery mAP | {maps['fp32']['mAP']:.2f} | {maps['bf16']['mAP']:.2f} |",
              f"| R1 | {maps['fp32']['R1']:.2f} | {maps['bf16']['R1']:.2f} |",
              "", f"bf16 vs fp32 fused training features: cosine min {result['cosine_min']:.5f}, "
              f"median {result['cosine_median']:.6f}, {result['images_below_0.999']} images "
              f"below 0.999; labels ARI {result['label_ari']:.4f}, "
              f"{result['samples_changed']} of {len(images)} samples in another cluster."]
    markdown = "\n".join(lines)
    result["markdown"] = markdown
    print("\n" + markdown + "\n")
    print(f"wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
