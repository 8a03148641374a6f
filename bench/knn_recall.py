"""Approximate (faiss) against exact kNN on the clustering bench's features: recall@k1 of
the neighbour lists and the agreement of the labels they give (Jaccard + DBSCAN).

    python bench/knn_recall.py --n 20000 --data reid

Prints one JSON line and writes it to --out (default bench/results/cluster_recall.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
from _memory import write_json
from cluster_bench import EPS, K1, K2, MIN_SAMPLES, make_features
from sklearn.metrics import adjusted_rand_score

from unreid.cluster import dbscan, jaccard_distance, knn


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--data", choices=("hard", "reid"), default="reid")
    p.add_argument("--out", default="bench/results/cluster_recall.json")
    args = p.parse_args()
    x, pids, _ = make_features(args.n, max(2, args.n // 17), kind=args.data)
    out: dict = {"n": args.n, "data": args.data}
    ids, labels = {}, {}
    for search in ("exact", "faiss"):
        t = time.process_time()
        ids[search], _ = knn(x, K1, search=search)
        out[f"knn_{search}_cpu_s"] = time.process_time() - t
        t = time.process_time()
        labels[search] = dbscan(jaccard_distance(x, K1, K2, cutoff=EPS, search=search), EPS,
                                MIN_SAMPLES)
        out[f"cluster_{search}_cpu_s"] = time.process_time() - t  # kNN included
    hits = [len(np.intersect1d(e, a)) for e, a in zip(ids["exact"], ids["faiss"], strict=True)]
    out["recall_at_k1"] = float(np.mean(hits)) / K1
    out["ari_exact_vs_faiss"] = float(adjusted_rand_score(labels["exact"], labels["faiss"]))
    out["labels_equal"] = bool((labels["exact"] == labels["faiss"]).all())
    out["ari_exact_vs_truth"] = float(adjusted_rand_score(pids, labels["exact"]))
    out["clusters_exact"] = int(labels["exact"].max() + 1)
    out["outliers_exact"] = float((labels["exact"] < 0).mean())
    # Both paths ran in this process: its peak bounds each of them (features included).
    out["peak_mb_both"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
