"""How many training samples PUL's and RSL's lambda keeps from a start, before any training.

For each start (the ImageNet weights, and a source ``--checkpoint``) and each feature the
methods could cluster (``pool``: pool5, what pul/rsl use; ``bn``: the BN-neck output the
others use), the train split's features are clustered as the methods do (PUL: k-means
into K; RSL: k-means inside each camera, M split by the cameras' shares) and this prints
the share of samples whose cosine to their centre passes each lambda, with the quartiles
of that cosine. The cosine threshold was set for one kind of features; this shows which.

    python bench/lambda_probe.py --checkpoint runs/adapt-synth/source/checkpoint.pt --size 64 32
    python bench/lambda_probe.py --data ../shared/data/cuhk03-detected \\
        --checkpoint runs/source/peta_reid/checkpoint.pt --num-classes 700
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _runs import REPO, RESULTS, _load_dataset, command_line, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synth:default", help="dataset root or synth:default")
    parser.add_argument("--checkpoint", default=None, help="a source model (checkpoint.pt)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="the ImageNet start")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="K = M (default: the train identity count)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.85, 0.7, 0.6, 0.5])
    parser.add_argument("--results", default=str(RESULTS / "lambda_probe.json"))
    args = parser.parse_args(argv)

    import torch

    from unreid.apps.inference import load_model_from_checkpoint
    from unreid.cluster import kmeans
    from unreid.cluster.selection import camera_cluster_counts
    from unreid.config import ModelConfig
    from unreid.data import load_images
    from unreid.models import build_model, extract_features

    ds = _load_dataset(args.data)
    pids, cams = np.asarray(ds.train.pids), np.asarray(ds.train.camids)
    k = args.num_classes or len(np.unique(pids[pids >= 0]))
    h, w = args.size
    images = load_images(ds.train.paths, h, w, cache_dir=REPO / ".cache" / "images")
    starts = {"ImageNet": build_model(ModelConfig(backbone=args.backbone, pretrained="imagenet"))}
    if args.checkpoint:
        starts["source"] = load_model_from_checkpoint(args.checkpoint)[0]

    def centre_cosine(x: torch.Tensor, labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
        c = torch.from_numpy(centres)[torch.from_numpy(labels)]
        return (x * c).sum(1).double().numpy()

    rows, lines = [], []
    head = " | ".join(f"> {lam:g}" for lam in args.lambdas)
    lines += [f"| start | feature | method | {head} | cosine quartiles |",
              "|:---|:---|:---|" + "---:|" * (len(args.lambdas) + 1)]
    for name, model in starts.items():
        for feature in ("pool", "bn"):
            model.head.feature = feature
            x = extract_features(model, images, progress=False)
            labels, centres = kmeans(x, k, seed=0)
            cosines = {"pul": centre_cosine(x, labels, centres)}
            rsl = np.zeros(len(cams))
            for cam, k_c in camera_cluster_counts(cams, None, k).items():
                idx = np.flatnonzero(cams == cam)
                lab_c, cen_c = kmeans(x[torch.from_numpy(idx)], k_c, seed=0)
                rsl[idx] = centre_cosine(x[torch.from_numpy(idx)], lab_c, cen_c)
            cosines["rsl"] = rsl
            for method, sim in cosines.items():
                shares = {f"{lam:g}": float((sim > lam).mean()) for lam in args.lambdas}
                quart = np.quantile(sim, [0.25, 0.5, 0.75])
                rows.append({"start": name, "feature": feature, "method": method,
                             "share_above": shares, "count_above": {
                                 f"{lam:g}": int((sim > lam).sum()) for lam in args.lambdas},
                             "cosine_quartiles": quart.tolist()})
                cells = " | ".join(f"{100 * v:.1f} %" for v in shares.values())
                lines.append(f"| {name} | {feature} | {method} | {cells} | "
                             f"{' / '.join(f'{q:.2f}' for q in quart)} |")
    header = (f"`{args.data}` train split ({len(pids)} images), {h}x{w}, K = M = {k}; share "
              f"of samples whose cosine to their (camera-)cluster centre passes lambda. "
              f"Command: `{command_line('lambda_probe.py')}`")
    markdown = header + "\n\n" + "\n".join(lines)
    print("\n" + markdown + "\n")
    write_results(Path(args.results), {"bench": "lambda_probe", "command": command_line(
        "lambda_probe.py"), "data": args.data, "checkpoint": args.checkpoint,
        "size": [h, w], "num_classes": k, "rows": rows, "markdown": markdown})
    return 0


if __name__ == "__main__":
    sys.exit(main())
