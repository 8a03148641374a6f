"""What a network's features know: neighbours and pseudo-labels, before or after training.

Cluster-based methods can only learn what their labels contain. For one dataset and one
network (the ImageNet initialisation, or a trained ``--checkpoint``) this prints, for
each feature set the methods can cluster on:

- ``NN id``: share of training images whose nearest neighbour (cosine, self excluded) is
  the same identity; ``NN cam``: ... is from the same camera;
- ``cross-cam NN id``: the same, with the neighbour taken from the *other* cameras only
  (what the Market-1501 protocol scores: same-camera matches do not count);
- for every DBSCAN ``eps``: cluster-contrast's labels (k-reciprocal Jaccard k1 30, k2 6,
  DBSCAN min_samples 4) against the true identities: clusters, outlier share, ARI,
  pair precision and the share of clusters spanning >= 2 cameras
  (:func:`unreid.cluster.label_quality`);
- ``cross-cam cluster pairs``: the clusters' mutual nearest neighbours (centroid cosine)
  among the clusters of another camera (each cluster belongs to its majority camera), and
  the share of those pairs whose majority identities agree: could one merge the
  per-camera pieces of a person by matching clusters across cameras?

Feature sets: ``input`` (F^x, the images), ``foreground`` (F^g, background masked) and
``fused`` (normalize(F^x + F^g)), as ``method.global_features`` names them; with
``--center-cameras`` also each of them with every camera's mean feature subtracted
before re-normalising (a cheap camera-bias correction: does it make clusters cross the
cameras?).

    python bench/probe_features.py                                   # synthetic world, GT masks
    python bench/probe_features.py --data ../shared/data/cuhk03-detected \\
        --mask-dir .cache/cuhk03-masks --center-cameras \\
        --out bench/results/probe_features_cuhk03.json
    python bench/probe_features.py --data ../shared/data/cuhk03-detected --mask-dir none \\
        --checkpoint runs/cuhk03_long/cluster_contrast/seed0 --out /tmp/probe.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _memory import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def center_cameras(features: torch.Tensor, camids: np.ndarray) -> torch.Tensor:
    """Subtract each camera's mean feature, then L2-normalise the rows."""
    out = features.clone()
    for c in np.unique(camids):
        rows = torch.from_numpy(np.flatnonzero(camids == c))
        out[rows] -= out[rows].mean(dim=0)
    return F.normalize(out, dim=1)


def neighbour_shares(features: torch.Tensor, pids: np.ndarray, camids: np.ndarray
                     ) -> dict[str, float]:
    """NN same identity / same camera, and NN same identity among the other cameras."""
    sim = features @ features.T
    sim.fill_diagonal_(-float("inf"))
    nn = sim.argmax(dim=1).numpy()
    same_cam = torch.from_numpy(camids[:, None] == camids[None, :])
    cross = sim.masked_fill(same_cam, -float("inf")).argmax(dim=1).numpy()
    return {"nn_same_id": float(np.mean(pids[nn] == pids)),
            "nn_same_cam": float(np.mean(camids[nn] == camids)),
            "cross_cam_nn_same_id": float(np.mean(pids[cross] == pids))}


def cross_camera_cluster_pairs(features: torch.Tensor, labels: np.ndarray, pids: np.ndarray,
                               camids: np.ndarray) -> tuple[int, float]:
    """Mutual-nearest cluster pairs across cameras and the share with the same majority
    identity ((0, nan) without two cameras holding clusters)."""
    ids = np.unique(labels[labels >= 0])
    if len(ids) == 0:
        return 0, float("nan")
    members = [np.flatnonzero(labels == c) for c in ids]
    cent = F.normalize(torch.stack([features[torch.from_numpy(m)].mean(dim=0)
                                    for m in members]), dim=1)
    cam = np.array([np.bincount(camids[m]).argmax() for m in members])
    who = np.array([np.bincount(pids[m]).argmax() for m in members])
    sim = cent @ cent.T
    sim[torch.from_numpy(cam[:, None] == cam[None, :])] = -float("inf")  # other cameras only
    if not torch.isfinite(sim).any():
        return 0, float("nan")
    best = sim.argmax(dim=1).numpy()
    a = np.flatnonzero((best[best] == np.arange(len(ids))) & (np.arange(len(ids)) < best))
    if len(a) == 0:
        return 0, float("nan")
    return len(a), float(np.mean(who[a] == who[best[a]]))


def feature_sets(args: argparse.Namespace, root: Path):
    """(dataset, {name: (N, D) features}) of the initial network on the train split."""
    from unreid.config import ModelConfig
    from unreid.data import load_dataset, load_images
    from unreid.masks import build_mask_provider, load_masks
    from unreid.models import build_model, extract_features

    ds = load_dataset(root)
    if args.checkpoint:
        from unreid.apps.inference import load_model_from_checkpoint

        model, cfg = load_model_from_checkpoint(args.checkpoint)
        args.size = (int(cfg.data.height), int(cfg.data.width))
        args.backbone, args.pretrained = str(cfg.model.backbone), f"checkpoint {args.checkpoint}"
    else:
        model = build_model(ModelConfig(backbone=args.backbone, pretrained=args.pretrained))
    h, w = args.size
    images = load_images(ds.train.paths, h, w, cache_dir=REPO / ".cache" / "images")
    sets = {"input": extract_features(model, images)}
    if args.mask_dir != "none":
        provider = build_mask_provider(
            "synthetic" if args.mask_dir is None else "png",
            mask_dir=args.mask_dir, dataset_root=root)
        masks = load_masks(ds.train.paths, provider, h, w, images=images)
        sets["foreground"] = extract_features(model, images, masks=masks)
        sets["fused"] = F.normalize(sets["input"] + sets["foreground"], dim=1)
    if args.center_cameras:
        cams = np.asarray(ds.train.camids)
        sets.update({f"{k} (cameras centred)": center_cameras(v, cams)
                     for k, v in list(sets.items())})
    return ds, sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synth:default",
                        help="dataset folder, or synth:default (generated once)")
    parser.add_argument("--mask-dir", default=None,
                        help="mask PNG folder (default: the synthetic world's masks; "
                             "none = input features only)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--pretrained", default="imagenet")
    parser.add_argument("--checkpoint", default=None,
                        help="probe a trained run (checkpoint.pt or its run folder) instead")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.5, 0.6])
    parser.add_argument("--center-cameras", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "probe_features_synth.json"))
    args = parser.parse_args(argv)

    from unreid.cluster import label_quality
    from unreid.data.synth import default_world
    from unreid.methods.cluster_contrast import jaccard_dbscan

    root = (default_world(quick=False, cache_root=REPO / ".cache" / "synth")
            if args.data == "synth:default" else Path(args.data))
    start = time.perf_counter()
    ds, sets = feature_sets(args, root)
    pids, cams = np.asarray(ds.train.pids), np.asarray(ds.train.camids)
    rows = []
    for name, feats in sets.items():
        shares = neighbour_shares(feats, pids, cams)
        for eps in args.eps:
            labels = jaccard_dbscan(feats, k1=30, k2=6, eps=eps, min_samples=4)
            q = label_quality(labels, pids, cams)
            pairs, correct = cross_camera_cluster_pairs(feats, labels, pids, cams)
            rows.append({"features": name, "eps": eps, **shares,
                         "cross_cam_cluster_pairs": pairs, "cross_cam_pairs_correct": correct,
                         **{k: q[k] for k in ("num_clusters", "outlier_ratio", "ari",
                                              "pair_precision", "multi_camera_share")}})
    n_ids = len(np.unique(pids))
    lines = [f"`{args.data}` train split ({len(pids)} images of {n_ids} identities, "
             f"{len(np.unique(cams))} cameras), {args.backbone} ({args.pretrained}) at "
             f"{args.size[0]}x{args.size[1]}. Command: `python bench/probe_features.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "| features | NN id | NN cam | cross-cam NN id | eps | clusters | outliers % "
             "| ARI | pair precision | multi-cam clusters % | cross-cam cluster pairs "
             "(same identity %) |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['features']} | {r['nn_same_id']:.3f} | {r['nn_same_cam']:.3f} | "
            f"{r['cross_cam_nn_same_id']:.3f} | {r['eps']:g} | {r['num_clusters']} | "
            f"{100 * r['outlier_ratio']:.0f} | {r['ari']:.3f} | {r['pair_precision']:.2f} | "
            f"{100 * r['multi_camera_share']:.0f} | {r['cross_cam_cluster_pairs']} "
            f"({100 * r['cross_cam_pairs_correct']:.0f}) |")
    markdown = "\n".join(lines)
    print("\n" + markdown + "\n")
    out = write_json(args.out, {"bench": "probe_features", "data": args.data,
                                "size": list(args.size), "backbone": args.backbone,
                                "pretrained": args.pretrained, "rows": rows,
                                "seconds": time.perf_counter() - start, "markdown": markdown})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
