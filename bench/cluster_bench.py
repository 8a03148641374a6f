"""Clustering benchmark: sparse Jaccard + DBSCAN against the kNN floor and a dense
cluster-contrast-style reference.

    python bench/cluster_bench.py                 # Market and MSMT17 train sizes (below)
    python bench/cluster_bench.py --quick         # small sizes, a smoke run
    python bench/cluster_bench.py --sizes market  # or msmt, quick-market, quick-msmt, or N

Market-1501 train: N = 12,936 (751 identities); MSMT17 train: N = 32,621 (1,041); D = 2048;
k1 = 30, k2 = 6, eps = 0.6, min_samples = 4 (cluster-contrast's settings).

Features: float32 with planted identities and cameras: identity centre + 1.5 x a unit
per-(identity, camera) offset + Gaussian noise of norm 2..5 (drawn per identity), so
that DBSCAN leaves ~20 % outliers and splits some identities by camera, as early
cluster-contrast epochs do. Generated row block by row block (no large temporaries).

Measurements, each in a fresh subprocess so that peak memory readings do not mix:

- knn: `unreid.cluster.knn(x, k1)`, the exact kNN every method needs (the floor);
- sparse: `jaccard_distance(x, k1, k2, cutoff=eps)` + `dbscan(..., eps, min_samples)`;
- dense (N <= 13,000 only): the dense reference of tests/jaccard_reference.py
  (`dense_jaccard`, float32 N x N matrices and per-row loops like cluster-contrast's
  `compute_jaccard_distance`, fed with the same kNN lists) + scikit-learn DBSCAN on the
  dense matrix. Its labels must equal the sparse ones up to renumbering (checked
  exactly, ARI printed too).

Time: best of `--repeats` runs inside the subprocess (the machine is shared; the minimum
is the least noisy). Memory: `peak MB` is the subprocess's ru_maxrss (everything: Python,
torch, the features); `extra MB` is the high-water mark above the resident size right
before the measured call (VmHWM after `clear_refs`, features and imports excluded).

Writes bench/results/cluster_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import finish, release_free_heap, reset_peak, status_kb

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cluster_bench.json"
SIZES = {"market": (12936, 751), "msmt": (32621, 1041)}
QUICK_SIZES = {"quick-market": (3000, 175), "quick-msmt": (6000, 190)}
DIM, CAMERAS = 2048, 6
K1, K2, EPS, MIN_SAMPLES = 30, 6, 0.6, 4
DENSE_LIMIT = 13_000








def make_features(n: int, ids: int, *, seed: int = 0):
    """(N, DIM) float32 features, (N,) identities and cameras (see the module doc)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(ids, DIM, generator=g), dim=1)
    offsets = torch.nn.functional.normalize(torch.randn(ids, CAMERAS, DIM, generator=g), dim=2)
    sigma = 2.0 + 3.0 * torch.rand(ids, generator=g)
    pids = torch.randint(0, ids, (n,), generator=g)
    cams = torch.randint(0, CAMERAS, (n,), generator=g)
    x = torch.empty(n, DIM)
    for s in range(0, n, 4096):
        p, c = pids[s : s + 4096], cams[s : s + 4096]
        noise = torch.randn(len(p), DIM, generator=g) * (sigma[p, None] / DIM**0.5)
        x[s : s + 4096] = centres[p] + 1.5 * offsets[p, c] + noise
    return x, pids.numpy(), cams.numpy()


def worker(kind: str, n: int, ids: int, repeats: int, labels_out: str) -> dict:
    import numpy as np

    from unreid.cluster import dbscan, jaccard_distance, knn

    x, pids, cams = make_features(n, ids)
    times: dict[str, list[float]] = {}

    def timed(name, fn, *args, **kwargs):
        s = time.perf_counter()
        out = fn(*args, **kwargs)
        times.setdefault(name, []).append(time.perf_counter() - s)
        return out

    if kind == "knn":

        def run():
            timed("total", knn, x, K1)
            return None, {}

    elif kind == "sparse":

        def run():
            s = time.perf_counter()
            dist = timed("jaccard", jaccard_distance, x, K1, K2, cutoff=EPS)
            labels = timed("dbscan", dbscan, dist, EPS, MIN_SAMPLES)
            times.setdefault("total", []).append(time.perf_counter() - s)
            return labels, {"stored_per_row": dist.nnz / n}

    else:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from jaccard_reference import dense_jaccard
        from sklearn.cluster import DBSCAN

        def run():
            s = time.perf_counter()
            rank, _ = timed("knn", knn, x, K1)
            dist = timed("jaccard", dense_jaccard, x.numpy(), K1, K2, rank=rank, dtype=np.float32)
            labels = timed(
                "dbscan",
                lambda d: DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed").fit(d),
                dist,
            ).labels_
            times.setdefault("total", []).append(time.perf_counter() - s)
            return labels, {}

    release_free_heap()
    rss_before = status_kb("VmRSS") or 0
    reset_ok = reset_peak()
    labels, extra = run()
    hwm = status_kb("VmHWM") if reset_ok else None
    for _ in range(repeats - 1):
        run()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "kind": kind,
        "n": n,
        "seconds": {k: min(v) for k, v in times.items()},
        "peak_mb": peak_kb / 1024,
        "extra_mb": (hwm - rss_before) / 1024 if hwm is not None else None,
        "baseline_mb": rss_before / 1024,
        **extra,
    }
    if labels is not None:
        from unreid.cluster import label_quality

        np.save(labels_out, np.asarray(labels, dtype=np.int64))
        q = label_quality(labels, pids, cams)
        out["quality"] = {
            k: q[k] for k in ("num_clusters", "outlier_ratio", "ari", "pair_precision",
                              "pair_recall")
        }
    return out


def _first_occurrence(labels):
    import numpy as np

    out = np.full(len(labels), -1, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels.tolist()):
        if lab >= 0:
            out[i] = seen.setdefault(lab, len(seen))
    return out


def parse_sizes(text: str, quick: bool) -> dict[str, tuple[int, int]]:
    if not text:
        return dict(QUICK_SIZES if quick else SIZES)
    chosen = {}
    for item in text.split(","):
        item = item.strip()
        if item in SIZES or item in QUICK_SIZES:
            chosen[item] = {**SIZES, **QUICK_SIZES}[item]
        elif item.isdigit():
            chosen[item] = (int(item), max(2, int(item) // 17))
        else:
            raise SystemExit(f"--sizes: unknown size {item!r}; use market, msmt or a number N")
    return chosen


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--sizes", default="", help="comma-separated: market, msmt or N")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._worker:
        kind, n, ids, labels_out = json.loads(args._worker)
        print(json.dumps(worker(kind, n, ids, args.repeats, labels_out)))
        return 0

    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (n, ids) in parse_sizes(args.sizes, args.quick).items():
            kinds = ["knn", "sparse"]
            if n <= DENSE_LIMIT and not args.no_dense:
                kinds.append("dense")
            row: dict = {"size": name, "n": n, "dim": DIM, "k1": K1, "k2": K2, "eps": EPS}
            for kind in kinds:
                labels_out = str(Path(tmp) / f"{name}-{kind}.npy")
                cmd = [sys.executable, __file__, "--repeats", str(args.repeats)]
                cmd += ["--_worker", json.dumps([kind, n, ids, labels_out])]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return proc.returncode
                row[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"done {name} {kind}: {row[kind]['seconds']['total']:.2f}s", file=sys.stderr)
            row["ratio"] = row["sparse"]["seconds"]["total"] / row["knn"]["seconds"]["total"]
            if "dense" in row:
                ours = np.load(Path(tmp) / f"{name}-sparse.npy")
                ref = np.load(Path(tmp) / f"{name}-dense.npy")
                row["dense_equal"] = bool((_first_occurrence(ours) == _first_occurrence(ref)).all())
                row["dense_ari"] = float(adjusted_rand_score(ref, ours))
                row["dense_speedup"] = (
                    row["dense"]["seconds"]["total"] / row["sparse"]["seconds"]["total"]
                )
            rows.append(row)

    header = (
        f"{'size':<13} {'N':>6} {'kNN s':>7} {'sparse s':>9} {'ratio':>6} {'kNN MB':>7} "
        f"{'sparse MB':>10} {'extra MB':>9} {'clusters':>8} {'outl':>5} {'dense s':>8} "
        f"{'dense MB':>9} {'= dense':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        k, s = r["knn"], r["sparse"]
        dense = (
            f"{r['dense']['seconds']['total']:8.2f} {r['dense']['peak_mb']:9.0f} "
            f"{str(r['dense_equal']):>8}"
            if "dense" in r
            else ""
        )
        print(
            f"{r['size']:<13} {r['n']:>6} {k['seconds']['total']:7.2f} "
            f"{s['seconds']['total']:9.2f} {r['ratio']:6.2f} {k['peak_mb']:7.0f} "
            f"{s['peak_mb']:10.0f} {s['extra_mb'] or float('nan'):9.0f} "
            f"{s['quality']['num_clusters']:>8} {s['quality']['outlier_ratio']:5.2f} {dense}"
        )
    return finish(args.out, {"quick": args.quick, "results": rows}, rows)


if __name__ == "__main__":
    sys.exit(main())
