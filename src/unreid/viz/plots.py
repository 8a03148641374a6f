"""Matplotlib figures of a run: training curves and 2-D feature embeddings.

Pure functions: records or arrays in, a PNG path out. The Agg backend is
forced so that no display is ever needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE

__all__ = ["curve_panels", "plot_embedding", "plot_training_curves", "tsne_2d"]

# (title, [(label, record key path)], y-axis as percent?)
_CURVE_PANELS: tuple[tuple[str, tuple[tuple[str, str], ...], bool], ...] = (
    ("training loss", (("loss", "loss"),), False),
    ("retrieval", (("mAP", "eval.mAP"), ("rank-1", "eval.R1"), ("mINP", "eval.mINP")), True),
    (
        "clusters",
        (("pseudo-identities", "num_clusters"), ("true identities", "label_quality.num_true_ids")),
        False,
    ),
    ("outlier share", (("outliers", "label_quality.outlier_ratio"),), True),
    (
        "label quality",
        (("ARI", "label_quality.ari"), ("pairwise F", "label_quality.pair_f1")),
        True,
    ),
    # Are the cameras being linked, and rightly? A high multi-camera share is only worth
    # something next to the precision of the cross-camera pairs and links.
    (
        "camera links",
        (
            ("clusters spanning >= 2 cameras", "label_quality.multi_camera_share"),
            ("cross-camera pair precision", "label_quality.cross_camera_pair_precision"),
            ("cross-camera NN same person", "label_quality.cross_camera_nn_share"),
            ("association link precision", "label_quality.association_link_precision"),
            ("online link precision", "label_quality.online_link_precision"),
        ),
        True,
    ),
    (
        "association links",
        (("at labelling", "info.association_links"), ("online (previous epoch)",
                                                      "info.online_links")),
        False,
    ),
)


def _lookup(record: dict[str, Any], dotted: str) -> float | None:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and node == node else None


def _epoch(record: dict[str, Any], index: int) -> int:
    """The record's epoch; its position when the field is missing or not a number
    (a hand-edited metrics.jsonl must not stop the report)."""
    epoch = record.get("epoch")
    return int(epoch) if isinstance(epoch, int | float) and epoch == epoch else index


def curve_panels(
    records: Sequence[dict[str, Any]],
) -> list[tuple[str, dict[str, list[tuple[int, float]]], bool]]:
    """What :func:`plot_training_curves` draws: per panel its title, its series that
    have values (label -> [(epoch, value)], fractions still as fractions) and whether
    its axis is in percent. Missing and NaN values are skipped."""
    panels = []
    for title, series, percent in _CURVE_PANELS:
        drawn = {}
        for label, key in series:
            points = [(_epoch(r, i), v) for i, r in enumerate(records)
                      if (v := _lookup(r, key)) is not None]
            if points:
                drawn[label] = points
        panels.append((title, drawn, percent))
    return panels


def plot_training_curves(records: Sequence[dict[str, Any]], out_png: str | Path) -> Path:
    """Per-epoch curves from ``metrics.jsonl`` records, one panel per
    :func:`curve_panels` entry.

    Each record is one epoch's JSON line (keys such as ``epoch``, ``loss``,
    ``num_clusters``, ``eval.mAP``, ``label_quality.ari``). Missing values are
    skipped, so a run without ground truth simply has empty quality panels.
    Fractions are drawn as percentages.
    """
    out_png = Path(out_png)
    panels = curve_panels(records)
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(17, 3.3 * rows), constrained_layout=True)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, series, percent) in zip(axes.flat, panels, strict=False):
        for label, points in series.items():
            xs, ys = zip(*points, strict=True)
            ys_arr = np.asarray(ys) * (100.0 if percent else 1.0)
            style = "--" if label.startswith("true") else "-"
            ax.plot(xs, ys_arr, style, marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if percent:
            ax.set_ylabel("%")
        if series:
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def tsne_2d(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """t-SNE of (N, D) features to (N, 2), seeded; perplexity adapted to small N."""
    n = len(features)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
    ).fit_transform(np.asarray(features, dtype=np.float32))


def plot_embedding(
    embeddings: dict[str, np.ndarray],
    pids: np.ndarray,
    camids: np.ndarray,
    out_png: str | Path,
) -> Path:
    """Scatter 2-D embeddings coloured by camera (top row) and identity (bottom).

    ``embeddings`` maps a column title (e.g. "before training") to (N, 2)
    points of the same N samples. Camera bias shows as camera-coloured blobs
    in the top row; after good training the identity colours form the blobs.
    """
    out_png = Path(out_png)
    titles = list(embeddings)
    fig, axes = plt.subplots(
        2, len(titles), figsize=(5 * len(titles), 9), squeeze=False, constrained_layout=True
    )
    _, pid_index = np.unique(pids, return_inverse=True)
    for col, title in enumerate(titles):
        pts = embeddings[title]
        for row, (colour, cmap, what) in enumerate(
            ((camids, "tab10", "camera"), (pid_index, "hsv", "identity"))
        ):
            ax = axes[row, col]
            ax.scatter(pts[:, 0], pts[:, 1], c=colour, cmap=cmap, s=6, alpha=0.8, linewidths=0)
            ax.set_title(f"{title}: coloured by {what}")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
