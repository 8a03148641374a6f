"""Clustering benchmark: sparse Jaccard + DBSCAN against the kNN floor and a dense
cluster-contrast-style reference.

    python bench/cluster_bench.py                 # Market and MSMT17 train sizes (below)
    python bench/cluster_bench.py --quick         # small sizes, a smoke run
    python bench/cluster_bench.py --sizes market  # or msmt, 100k, quick-market, quick-msmt, or N

Market-1501 train: N = 12,936 (751 identities); MSMT17 train: N = 32,621 (1,041); D = 2048;
k1 = 30, k2 = 6, eps = 0.6, min_samples = 4 (cluster-contrast's settings). From N =
100,000 on the row also clusters with the approximate faiss kNN (`search="faiss"`) and
compares its labels with the exact path (ARI), which `--no-exact-large` skips (it costs
~(N / 32,621)^2 the MSMT17 kNN; its own kNN floor is timed only with `--floor-large`).

Features (`--data`, default: hard below N = 100,000, reid from there on), float32 with
planted identities and cameras (`make_features`):

- hard: identity centre + 1.5 x a unit per-(identity, camera) offset + Gaussian noise of
  norm 2..5 (drawn per identity), near-isotropic, so that DBSCAN leaves ~20 % outliers
  and splits some identities by camera, as early cluster-contrast epochs do;
- reid: closer to trained re-ID features: identities of 10-20 images, a decaying
  spectrum (coordinate j scaled by 1 / (1 + j / 32): ~90 % of the variance in 256
  directions, so similar identities are hard negatives), camera offsets of norm 0.5 and
  noise of norm 0.5-0.8: same-identity cosines ~0.5-0.75, the nearest other identity's
  ~0.35 at N = 6,000.

Generated row block by row block (no large temporaries).

Measurements, each in a fresh subprocess so that peak memory readings do not mix:

- sparse: `jaccard_distance(x, k1, k2, cutoff=eps, search="exact")` + `dbscan(...)`,
  each run right after a timed `unreid.cluster.knn(x, k1)` in the same process (the kNN
  every method needs, the floor; `ratio` = median total / median kNN);
- approx (N >= 100,000): the same with `search="faiss"` (its floor: the faiss kNN);
- dense (N <= 13,000 only): the dense reference of tests/jaccard_reference.py
  (`dense_jaccard`, float32 N x N matrices and per-row loops like cluster-contrast's
  `compute_jaccard_distance`, fed with the same kNN lists) + scikit-learn DBSCAN on the
  dense matrix. Its labels must equal the sparse ones up to renumbering (checked
  exactly, ARI printed too).

Time: median of `--repeats` runs inside the subprocess; the ratio divides two medians of
the same bench run (the machine may be shared: the JSON records the processor, `nproc`
and the load average before and after). Memory: `peak MB` is the subprocess's ru_maxrss
(everything: Python, torch, the features); `extra MB` is the high-water mark above the
resident size right
before the measured call (VmHWM after `clear_refs`, features and imports excluded).

Writes bench/results/cluster_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import finish, release_free_heap, reset_peak, status_kb

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cluster_bench.json"
SIZES = {"market": (12936, 751), "msmt": (32621, 1041), "100k": (100_000, 5882)}
QUICK_SIZES = {"quick-market": (3000, 175), "quick-msmt": (6000, 190)}
DIM, CAMERAS = 2048, 6
K1, K2, EPS, MIN_SAMPLES = 30, 6, 0.6, 4
DENSE_LIMIT = 13_000
APPROX_FROM = 100_000


def machine() -> dict:
    """Processor name, core count and load average (the ratios are only comparable with
    these next to them)."""
    name = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {
        "processor": name,
        "nproc": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg": [float(v) for v in load],
    }


def make_features(n: int, ids: int, *, seed: int = 0, kind: str = "hard"):
    """(N, DIM) float32 features, (N,) identities and cameras (see the module doc).

    ``kind="hard"``: isotropic identity centres, camera offsets of norm 1.5 and noise of
    norm 2..5: near-isotropic features, ~20 % outliers (the Market/MSMT17 rows).
    ``kind="reid"``: closer to trained re-ID features: every coordinate j scaled by
    ``1 / (1 + j / 32)`` (about 90 % of the variance in the first 256 directions, as in
    trained 2048-d embeddings, so nearby identities are hard negatives at cosine ~0.3-0.4),
    identities of 10-20 images, camera offsets of norm 0.5 and noise of norm 0.5-0.8 per
    identity: same-identity cosines ~0.55-0.8.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    if kind == "hard":
        centres = torch.nn.functional.normalize(torch.randn(ids, DIM, generator=g), dim=1)
        offsets = torch.nn.functional.normalize(
            torch.randn(ids, CAMERAS, DIM, generator=g), dim=2
        )
        sigma = 2.0 + 3.0 * torch.rand(ids, generator=g)
        pids = torch.randint(0, ids, (n,), generator=g)
        offset_norm, noise_scale = 1.5, torch.full((DIM,), DIM**-0.5)
    elif kind == "reid":
        # Identity sizes 10..20 (N / 15 identities; `ids` is not used), rows shuffled.
        sizes = torch.randint(10, 21, (n // 10 + 1,), generator=g)
        ids = int(torch.searchsorted(torch.cumsum(sizes, 0), n)) + 1
        spectrum = 1.0 / (1.0 + torch.arange(DIM) / 32.0)
        centres = torch.nn.functional.normalize(
            torch.randn(ids, DIM, generator=g) * spectrum, dim=1
        )
        offsets = torch.nn.functional.normalize(
            torch.randn(ids, CAMERAS, DIM, generator=g) * spectrum, dim=2
        )
        sigma = 0.5 + 0.3 * torch.rand(ids, generator=g)
        pids = torch.repeat_interleave(torch.arange(ids), sizes[:ids])[:n]
        pids = pids[torch.randperm(n, generator=g)]
        offset_norm, noise_scale = 0.5, spectrum / torch.linalg.vector_norm(spectrum)
    else:
        raise SystemExit(f"--data: unknown kind {kind!r}; use hard or reid")
    cams = torch.randint(0, CAMERAS, (n,), generator=g)
    x = torch.empty(n, DIM)
    for s in range(0, n, 4096):
        p, c = pids[s : s + 4096], cams[s : s + 4096]
        if kind == "hard":  # the original expression, so the old rows' data is unchanged
            noise = torch.randn(len(p), DIM, generator=g) * (sigma[p, None] / DIM**0.5)
        else:
            noise = torch.randn(len(p), DIM, generator=g) * noise_scale * sigma[p, None]
        x[s : s + 4096] = centres[p] + offset_norm * offsets[p, c] + noise
    return x, pids.numpy(), cams.numpy()


def worker(
    kind: str, n: int, ids: int, repeats: int, labels_out: str, data: str, floor: bool
) -> dict:
    import numpy as np

    from unreid.cluster import dbscan, jaccard_distance, knn

    x, pids, cams = make_features(n, ids, kind=data)
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

    elif kind in ("sparse", "approx"):
        search = "exact" if kind == "sparse" else "faiss"

        def run():
            # The kNN floor, timed right before in the same process: on a shared machine
            # the two then see the same load, and their ratio is what is compared.
            if floor:
                timed("knn", knn, x, K1, search=search)
            s = time.perf_counter()
            dist = timed("jaccard", jaccard_distance, x, K1, K2, cutoff=EPS, search=search)
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
        "data": data,
        "seconds": {k: statistics.median(v) for k, v in times.items()},
        "runs": {k: v for k, v in times.items()},
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
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-exact-large", action="store_true",
                   help=f"N >= {APPROX_FROM}: skip the exact path (no ARI against it)")
    p.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    p.add_argument("--data", choices=("auto", "hard", "reid"), default="auto",
                   help=f"features (make_features): auto = hard below N = {APPROX_FROM}, "
                   "reid from there on")
    p.add_argument("--floor-large", action="store_true",
                   help=f"N >= {APPROX_FROM}: time the exact kNN floor before the exact path "
                   "too (doubles its cost); the approximate path always has its floor")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._worker:
        kind, n, ids, labels_out, data, floor = json.loads(args._worker)
        print(json.dumps(worker(kind, n, ids, args.repeats, labels_out, data, floor)))
        return 0

    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (n, ids) in parse_sizes(args.sizes, args.quick).items():
            if n >= APPROX_FROM:
                kinds = ["approx"] + ([] if args.no_exact_large else ["sparse"])
            else:
                kinds = ["sparse"]
            if n <= DENSE_LIMIT and not args.no_dense:
                kinds.append("dense")
            data = args.data if args.data != "auto" else ("reid" if n >= APPROX_FROM else "hard")
            row: dict = {"size": name, "n": n, "dim": DIM, "k1": K1, "k2": K2, "eps": EPS,
                         "data": data, "machine_before": machine()}
            for kind in kinds:
                labels_out = str(Path(tmp) / f"{name}-{kind}.npy")
                # The dense reference checks labels: one run is enough.
                repeats = 1 if kind == "dense" else args.repeats
                cmd = [sys.executable, __file__, "--repeats", str(repeats)]
                floor = kind != "sparse" or n < APPROX_FROM or args.floor_large
                cmd += ["--_worker", json.dumps([kind, n, ids, labels_out, data, floor])]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return proc.returncode
                row[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"done {name} {kind}: {row[kind]['seconds']['total']:.2f}s", file=sys.stderr,
                      flush=True)
            row["machine_after"] = machine()
            for kind in ("sparse", "approx"):
                if kind in row and "knn" in row[kind]["seconds"]:
                    sec, runs = row[kind]["seconds"], row[kind]["runs"]
                    row[kind]["ratio"] = sec["total"] / sec["knn"]
                    # Each run over the kNN right before it: robust to load that changes
                    # between runs (the ratio of medians can pair a quiet kNN with a busy run).
                    row[kind]["ratio_per_run"] = [
                        t / k for t, k in zip(runs["total"], runs["knn"], strict=True)
                    ]
                    row[kind]["ratio_median_of_runs"] = statistics.median(
                        row[kind]["ratio_per_run"]
                    )
            if "sparse" in row and "ratio" in row["sparse"]:
                row["ratio"] = row["sparse"]["ratio"]
            if "approx" in row and "sparse" in row:
                ours = np.load(Path(tmp) / f"{name}-approx.npy")
                ref = np.load(Path(tmp) / f"{name}-sparse.npy")
                row["approx_ari"] = float(adjusted_rand_score(ref, ours))
                row["approx_equal"] = bool(
                    (_first_occurrence(ours) == _first_occurrence(ref)).all()
                )
            if "dense" in row:
                ours = np.load(Path(tmp) / f"{name}-sparse.npy")
                ref = np.load(Path(tmp) / f"{name}-dense.npy")
                row["dense_equal"] = bool((_first_occurrence(ours) == _first_occurrence(ref)).all())
                row["dense_ari"] = float(adjusted_rand_score(ref, ours))
                row["dense_speedup"] = (
                    row["dense"]["seconds"]["total"] / row["sparse"]["seconds"]["total"]
                )
            rows.append(row)

    info = machine()
    print(f"processor: {info['processor']}, nproc {info['nproc']}, OMP_NUM_THREADS "
          f"{info['omp_num_threads']}, load average {rows[0]['machine_before']['loadavg']} -> "
          f"{info['loadavg']} (median of {args.repeats} runs)" if rows else "")
    header = (
        f"{'size':<13} {'N':>7} {'kNN s':>7} {'jaccard s':>9} {'dbscan s':>8} {'total s':>8} "
        f"{'ratio':>6} {'peak MB':>8} {'clusters':>8} {'outl':>5} {'= dense':>8} "
        f"{'approx s':>9} {'approx MB':>9} {'ARI':>6}"
    )
    print(header)
    print("-" * len(header))

    def cell(value, fmt):
        return format(value, fmt) if value is not None else format("-", fmt.split(".")[0] + "s")

    for r in rows:
        s, a = r.get("sparse"), r.get("approx")
        main = s if s and "knn" in s["seconds"] else a
        k = {"seconds": {"total": main["seconds"]["knn"]}}
        print(
            f"{r['size']:<13} {r['n']:>7} {cell(k and k['seconds']['total'], '7.2f')} "
            f"{cell(s and s['seconds']['jaccard'], '9.2f')} "
            f"{cell(s and s['seconds']['dbscan'], '8.2f')} "
            f"{cell(s and s['seconds']['total'], '8.2f')} {cell(r.get('ratio'), '6.2f')} "
            f"{cell(s and s['peak_mb'], '8.0f')} {main['quality']['num_clusters']:>8} "
            f"{main['quality']['outlier_ratio']:5.2f} {str(r.get('dense_equal', '-')):>8} "
            f"{cell(a and a['seconds']['total'], '9.2f')} {cell(a and a['peak_mb'], '9.0f')} "
            f"{cell(r.get('approx_ari'), '6.3f')}"
        )
    return finish(args.out, {"quick": args.quick, "repeats": args.repeats, "machine": info,
                             "results": rows}, rows)


if __name__ == "__main__":
    sys.exit(main())
