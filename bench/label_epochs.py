"""Pseudo-label quality per epoch of finished (or running) runs, as a Markdown table.

Reads each run folder's ``metrics.jsonl`` (the trainer logs ``label_quality`` against the
true identities every epoch when the data has them) and prints one row per epoch:
clusters, outlier share, ARI, pair precision / recall, the share of clusters spanning
>= 2 cameras and the precision of their cross-camera pairs, the share of images whose
nearest other-camera image is the same person, the association's links and their
precision (cap), the samples SFE-CR's re-allocation moved or let join (``info``), and
the mAP of the epochs that were evaluated. This is how the benchmarks tell *why* a method
gains or does not: the labels it trained on.

    python bench/label_epochs.py runs/cuhk03/cluster_contrast/seed0 runs/cuhk03/sfe_cr/seed0
    python bench/label_epochs.py RUN [RUN ...] --out bench/results/label_epochs_cuhk03.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _memory import write_json
from _runs import read_records


def epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    """One dict per trained epoch of ``run_dir`` (its label quality, info and eval)."""
    if not (run_dir / "metrics.jsonl").is_file():
        raise SystemExit(f"{run_dir}: no metrics.jsonl (pass a run folder of `unreid train`)")
    rows = []
    for rec in read_records(run_dir):
        q = rec.get("label_quality")
        if not q:
            continue
        info = rec.get("info") or {}
        rows.append({"epoch": rec["epoch"], "clusters": q["num_clusters"],
                     "outlier_ratio": q["outlier_ratio"], "ari": q["ari"],
                     "pair_precision": q["pair_precision"], "pair_recall": q["pair_recall"],
                     "multi_camera_share": q["multi_camera_share"],
                     "cross_camera_pair_precision": q.get("cross_camera_pair_precision"),
                     "cross_camera_nn_share": q.get("cross_camera_nn_share"),
                     "association_links": info.get("association_links"),
                     "association_link_precision": q.get("association_link_precision"),
                     "moved": info.get("moved"), "joined": info.get("joined"),
                     "mAP": (rec.get("eval") or {}).get("mAP")})
    return rows


def _cell(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _pct(value: Any) -> str:
    """A fraction as a percent cell; – when absent or NaN."""
    return "–" if value is None or value != value else f"{100 * value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    lines = ["| run | epoch | clusters | outliers % | ARI | pair precision | pair recall "
             "| multi-cam clusters % | cross-cam pair precision % | cross-cam NN same person % "
             "| links (precision %) | CR moved / joined | mAP |",
             "|:---|" + "---:|" * 12]
    result = {}
    for run in args.runs:
        rows = epoch_rows(Path(run))
        result[run] = rows
        for r in rows:
            cr = "–" if r["moved"] is None else f"{r['moved']} / {r['joined']}"
            links = ("–" if r["association_links"] is None else
                     f"{r['association_links']} ({_pct(r['association_link_precision'])})")
            lines.append(
                f"| {run} | {r['epoch']} | {r['clusters']} | {100 * r['outlier_ratio']:.0f} | "
                f"{r['ari']:.3f} | {r['pair_precision']:.2f} | {r['pair_recall']:.2f} | "
                f"{100 * r['multi_camera_share']:.1f} | {_pct(r['cross_camera_pair_precision'])} | "
                f"{_pct(r['cross_camera_nn_share'])} | {links} | {cr} | "
                f"{_cell(None if r['mAP'] is None else 100 * r['mAP'], '.1f')} |")
    print("\n".join(lines))
    if args.out:
        print(f"wrote {write_json(args.out, {'bench': 'label_epochs', 'runs': result})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
