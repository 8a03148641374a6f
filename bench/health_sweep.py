"""Label-health warnings on the labels of ``bench/auto_cluster.py``'s three settings.

For every dataset of an ``auto_cluster.py`` result (the synthetic images-per-identity
sweep and CUHK03), this re-clusters the cached training features with the papers'
defaults, the setting ``cluster.auto`` chose and the best grid point, and prints what a
training run's health check (:func:`unreid.cluster.label_health`,
:func:`unreid.cluster.health_warnings`) would say about each: outlier share, largest
cluster, singletons, clusters spanning cameras, and the warning lines. Run
``auto_cluster.py`` first (it caches the features under ``.cache/auto_cluster``; their
file names come from its own helper and the command line its result records).

    python bench/health_sweep.py --out bench/results/health_sweep.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _memory import write_json
from auto_cluster import feature_files

from unreid.cluster import health_warnings, jaccard_dbscan, label_health, shrink_k

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SETTINGS = ("defaults", "auto", "best_grid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS / "auto_cluster.json"))
    parser.add_argument("--out", default=str(RESULTS / "health_sweep.json"))
    args = parser.parse_args(argv)

    result = json.loads(Path(args.results).read_text())
    files = feature_files(result)  # as auto_cluster.py named them for its recorded command
    rows = []
    for r in result["results"]:
        npz = np.load(files[r["dataset"]])
        feats, cams = npz["feats"], npz["camids"]
        for setting in SETTINGS:
            p = r[setting]["params"]
            k1, k2 = shrink_k(int(p["k1"]), int(p["k2"]), len(cams))
            labels = jaccard_dbscan(feats, k1=k1, k2=k2, eps=float(p["eps"]),
                                    min_samples=int(p["min_samples"]), warn=False)
            health = label_health(labels, cams)
            rows.append({"dataset": r["dataset"], "setting": setting, "ari": r[setting]["ari"],
                         "health": health,
                         "warnings": health_warnings(health, auto=setting == "auto")})
    lines = ["| dataset | setting | ARI | outliers % | largest cluster % | singleton clusters "
             "| multi-camera clusters % | warnings |", "|:---|:---|---:|---:|---:|---:|---:|:---|"]
    for row in rows:
        h = row["health"]
        multi = h.get("multi_camera_share")
        lines.append(
            f"| {row['dataset']} | {row['setting'].replace('_', ' ')} | {row['ari']:.3f} | "
            f"{100 * h['outlier_share']:.0f} | {100 * h['largest_cluster_share']:.1f} | "
            f"{h['singletons']} | "
            f"{'-' if multi is None else f'{100 * multi:.0f}'} | "
            f"{'; '.join(row['warnings']) or 'none'} |")
    markdown = "\n".join(lines)
    print(markdown)
    print(f"wrote {write_json(args.out, {'command': sys.argv, 'rows': rows, 'table': markdown})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
