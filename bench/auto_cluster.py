"""``cluster.auto`` against the fixed defaults and the best hand-tuned setting, no training.

For each dataset the training images' features of the initial network (ImageNet
EfficientNet-Lite0 at 128x64 by default) are clustered three ways with k-reciprocal
Jaccard + DBSCAN and scored against the true identities
(:func:`unreid.cluster.label_quality`):

- ``defaults``: the fixed config defaults (k1 30, k2 6, eps 0.6, min_samples 4);
- ``auto``: :func:`unreid.cluster.auto_cluster_params` on the same features and camera
  ids (``--ignore-cameras``: without them, the rule for camera-less data);
- ``best grid``: the best ARI of a small hand-tuned grid (k1 x min_samples x eps, k2 =
  max(2, round(k1 / 5))) -- what a user with ground truth could pick.

Datasets: the synthetic world with 2 cameras at 2, 4, 8, 16 images per identity per
camera (``--images-per-id`` 4, 8, 16, 32 in total; every identity is seen by both
cameras) and CUHK03 (``--cuhk03``, its bounding_box_train). Features are cached in
``.cache/auto_cluster/`` so a re-run only clusters.

    OMP_NUM_THREADS=1 python bench/auto_cluster.py \\
        --cuhk03 /work/shared/data/cuhk03-detected --out bench/results/auto_cluster.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _memory import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = REPO / ".cache" / "auto_cluster"
DEFAULTS = {"k1": 30, "k2": 6, "eps": 0.6, "min_samples": 4}
KEYS = ("num_clusters", "outlier_ratio", "ari", "pair_precision", "pair_recall")


def world(per_camera: int, ids: int, seed: int) -> Path:
    """A 2-camera synthetic world with ``per_camera`` images per identity per camera."""
    from unreid.data.synth import SynthConfig, generate_world

    cfg = SynthConfig(ids=ids, cameras=2, images_per_id=2 * per_camera, seed=seed,
                      distractors=0)
    out = CACHE / f"world_ids{ids}_pc{per_camera}_s{seed}"
    if not (out / "world.json").is_file():
        generate_world(cfg, out, progress=False)
    return out


def feature_cache(tag: str, args: argparse.Namespace) -> Path:
    """The ``.npz`` the features of dataset ``tag`` (see :func:`datasets`) are cached in."""
    return CACHE / f"feats_{tag}_{args.backbone}_{args.size[0]}x{args.size[1]}.npz"


def datasets(args: argparse.Namespace) -> list[tuple[str, Callable[[], Path], str]]:
    """``(name, root, tag)`` of every dataset the arguments ask for: the display name (the
    results' ``dataset``), a function that returns its folder (generating a synthetic
    world on first use) and the tag its feature cache is named by."""
    sets = [(f"synth 2 cams, {k}/id/cam", lambda k=k: world(k, args.ids, args.seed),
             f"synth_ids{args.ids}_pc{k}_s{args.seed}") for k in args.per_camera]
    if args.cuhk03:
        sets.append(("CUHK03 train", lambda: Path(args.cuhk03), "cuhk03"))
    return sets


def feature_files(result: dict) -> dict[str, Path]:
    """Dataset name -> cached feature file of a result this script wrote (its JSON), from
    the command line it records, so other benches never rebuild the names by hand."""
    args = parse_args(result["command"][1:])
    return {name: feature_cache(tag, args) for name, _, tag in datasets(args)}


def train_features(root: Path, args: argparse.Namespace, tag: str):
    """(features (N, D), pids (N,), camids (N,)) of the train split, cached by ``tag``."""
    cache = feature_cache(tag, args)
    if cache.is_file():
        z = np.load(cache)
        return torch.from_numpy(z["feats"]), z["pids"], z["camids"]
    from unreid.config import ModelConfig
    from unreid.data import load_dataset, load_images
    from unreid.models import build_model, extract_features

    ds = load_dataset(root)
    model = build_model(ModelConfig(backbone=args.backbone, pretrained=args.pretrained))
    h, w = args.size
    images = load_images(ds.train.paths, h, w, cache_dir=REPO / ".cache" / "images")
    feats = extract_features(model, images).float()
    pids, cams = np.asarray(ds.train.pids), np.asarray(ds.train.camids)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, feats=feats.numpy(), pids=pids, camids=cams)
    return feats, pids, cams


def score(feats, pids, cams, params: dict) -> dict:
    from unreid.cluster import jaccard_dbscan, label_quality, shrink_k

    k1, k2 = shrink_k(params["k1"], params["k2"], len(pids))
    labels = jaccard_dbscan(feats, k1=k1, k2=k2, eps=params["eps"],
                            min_samples=params["min_samples"], warn=False)
    q = label_quality(labels, pids, cams)
    return {"params": dict(params), **{k: q[k] for k in KEYS}}


def grid(args: argparse.Namespace) -> list[dict]:
    return [{"k1": k1, "k2": max(2, round(k1 / 5)), "min_samples": ms, "eps": eps}
            for k1, ms, eps in itertools.product(args.grid_k1, args.grid_min_samples,
                                                 args.grid_eps)]


def bench_one(name: str, feats, pids, cams, args: argparse.Namespace) -> dict:
    from unreid.cluster import auto_cluster_params

    start = time.perf_counter()
    choice = auto_cluster_params(feats, camids=None if args.ignore_cameras else cams)
    auto_seconds = time.perf_counter() - start
    auto = score(feats, pids, cams, choice.params())
    auto["reason"] = choice.reason
    auto["seconds"] = auto_seconds
    rows = [score(feats, pids, cams, p) for p in grid(args)]
    best = max(rows, key=lambda r: r["ari"])
    _, counts = np.unique(pids, return_counts=True)
    return {"dataset": name, "num_images": len(pids), "num_ids": len(counts),
            "images_per_id": float(counts.mean()), "defaults": score(feats, pids, cams, DEFAULTS),
            "auto": auto, "best_grid": best, "grid": rows}


def fmt(r: dict) -> str:
    p = r["params"]
    return (f"k1 {p['k1']} k2 {p['k2']} ms {p['min_samples']} eps {p['eps']:.2f} | "
            f"{r['num_clusters']} | {100 * r['outlier_ratio']:.0f} | {r['ari']:.3f} | "
            f"{r['pair_precision']:.2f} | {r['pair_recall']:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-camera", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--ids", type=int, default=300, help="synthetic identities (half train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuhk03", default=None, help="CUHK03 folder (Market layout)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--pretrained", default="imagenet")
    parser.add_argument("--grid-k1", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--grid-min-samples", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--grid-eps", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--ignore-cameras", action="store_true",
                        help="choose without the camera ids (the rule for camera-less data)")
    parser.add_argument("--features-only", action="store_true",
                        help="extract and cache the features, cluster nothing")
    parser.add_argument("--out", default=str(RESULTS / "auto_cluster.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for name, root, tag in datasets(args):
        feats, pids, cams = train_features(root(), args, tag)
        if args.features_only:
            print(f"{name}: {len(pids)} features cached", flush=True)
            continue
        results.append(bench_one(name, feats, pids, cams, args))
        r = results[-1]
        print(f"{name}: auto {r['auto']['ari']:.3f} best {r['best_grid']['ari']:.3f} "
              f"defaults {r['defaults']['ari']:.3f} ({r['auto']['reason']})", flush=True)
    if args.features_only:
        return 0
    import platform

    cpu = platform.processor() or platform.machine()
    lines = [f"{args.backbone} ({args.pretrained}) at {args.size[0]}x{args.size[1]}, training "
             f"images. Command: `OMP_NUM_THREADS=1 python bench/auto_cluster.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "| dataset | images/id | setting | params | clusters | outliers % | ARI "
             "| pair precision | pair recall |",
             "|:---|---:|:---|:---|---:|---:|---:|---:|---:|"]
    for r in results:
        for label in ("defaults", "auto", "best_grid"):
            lines.append(f"| {r['dataset']} ({r['num_ids']} ids) | {r['images_per_id']:.1f} | "
                         f"{label.replace('_', ' ')} | {fmt(r[label])} |")
    print("\n".join(lines))
    # the command as parsed: feature_files rebuilds the cache names from it
    command = sys.argv if argv is None else [sys.argv[0], *argv]
    write_json(args.out, {"command": command, "cpu": cpu, "results": results,
                          "table": "\n".join(lines)})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
