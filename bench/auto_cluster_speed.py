"""Time ``cluster.auto``'s choice with one shared kNN search against a search per graph.

With camera ids :func:`unreid.cluster.auto_cluster_params` builds one Jaccard graph per
k1 choice (5) and estimates the images per identity from the neighbour similarities;
before, each of the six ran its own exact kNN search over the same features. This times
the choice both ways (``per graph``: the shared search switched off, every graph and
the estimate search for themselves; ``shared``: this version), alternating runs, and
checks that both choose exactly the same. Also timed: one search alone, at the depth
the shared one uses (41 neighbours).

Features, CUHK03-sized (7,239 x 1,280, 2 cameras):

- ``--features F.npz`` (arrays ``feats`` (N, D) and ``camids`` (N,)), e.g. the CUHK03
  training features ``bench/auto_cluster.py`` caches
  (``.cache/auto_cluster/feats_cuhk03_tf_efficientnet_lite0_128x64.npz``);
- else planted people (``--planted N D IDS``, default 7239 1280 746): a weak identity
  centre, a camera offset and per-image noise, two cameras, float32.

    OMP_NUM_THREADS=1 python bench/auto_cluster_speed.py \\
        --features .cache/auto_cluster/feats_cuhk03_tf_efficientnet_lite0_128x64.npz \\
        --out bench/results/auto_cluster_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from _memory import write_json

import unreid.cluster.auto as auto_module
from unreid.cluster import auto_cluster_params
from unreid.cluster.knn import as_features, neighbours

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def planted(n: int, dim: int, ids: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, dim) float32, camids (n,)): ``ids`` people over 2 cameras, each image
    a weak identity centre + its camera's offset + noise (features that separate people
    about as poorly as ImageNet features do)."""
    rng = np.random.default_rng(seed)
    pids = np.arange(n) % ids
    cams = (np.arange(n) // ids) % 2
    centres = rng.normal(size=(ids, dim))
    offsets = 0.3 * rng.normal(size=(2, dim))
    feats = centres[pids] + offsets[cams] + 1.2 * rng.normal(size=(n, dim))
    return feats.astype(np.float32), cams


def timed(feats: np.ndarray, cams: np.ndarray, shared: bool):
    """(seconds, AutoChoice) of one auto_cluster_params call."""
    with mock.patch.object(auto_module, "_shared_neighbours",
                           auto_module._shared_neighbours if shared else lambda *a: None):
        start = time.perf_counter()
        choice = auto_cluster_params(feats, camids=cams)
        return time.perf_counter() - start, choice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=None, help=".npz with feats and camids")
    parser.add_argument("--planted", type=int, nargs=3, default=(7239, 1280, 746),
                        metavar=("N", "D", "IDS"))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way")
    parser.add_argument("--out", default=str(RESULTS / "auto_cluster_speed.json"))
    args = parser.parse_args(argv)

    if args.features:
        z = np.load(args.features)
        feats, cams = z["feats"].astype(np.float32), z["camids"]
        source = f"features {Path(args.features).name}"
    else:
        feats, cams = planted(*args.planted)
        source = "planted {} x {}, {} identities, 2 cameras".format(*args.planted)
    print(f"{source}: {feats.shape[0]} x {feats.shape[1]}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)

    start = time.perf_counter()
    neighbours(*as_features(feats, who="bench"), min(len(feats), 41))
    search = time.perf_counter() - start
    seconds: dict[str, list[float]] = {"per graph": [], "shared": []}
    choices = {}
    for _ in range(args.repeats):  # alternating, so load changes hit both ways alike
        for way in seconds:
            took, choices[way] = timed(feats, cams, shared=way == "shared")
            seconds[way].append(took)
            print(f"  {way}: {took:.2f} s", flush=True)
    same = choices["per graph"] == choices["shared"]
    if not same:
        print(f"error: the choices differ: {choices}", file=sys.stderr)
    med = {way: statistics.median(s) for way, s in seconds.items()}
    lines = ["| auto_cluster_params | median s | runs s |", "|:---|---:|:---|",
             *(f"| {way} | {med[way]:.2f} | {', '.join(f'{t:.2f}' for t in s)} |"
               for way, s in seconds.items()),
             f"| one kNN search (41 neighbours) | {search:.2f} | |"]
    print("\n".join(lines))
    print(f"speed-up {med['per graph'] / med['shared']:.1f}x; same choice: {same} "
          f"({choices['shared'].reason})")
    command = sys.argv if argv is None else [sys.argv[0], *argv]
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):  # lscpu's "Model name" on Linux
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    write_json(args.out, {
        "command": command, "cpu": cpu, "threads": torch.get_num_threads(), "source": source,
        "shape": list(feats.shape), "seconds": seconds, "median_seconds": med,
        "search_seconds": search, "same_choice": same,
        "choice": choices["shared"].as_dict(), "table": "\n".join(lines),
    })
    print(f"written {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
