"""How good are the pseudo-labels? Metrics against ground-truth identities.

The engine logs :func:`label_quality` every epoch when the true identities are
known (synthetic data, benchmarks), so a run shows *why* a method helps: fewer
outliers, purer clusters, or clusters that stop following cameras.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from unreid.errors import ClusteringError

from .knn import as_features, default_chunk

__all__ = ["cross_camera_nn_share", "label_quality"]


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs inside groups of the given sizes."""
    c = counts.astype(np.int64)
    return int((c * (c - 1) // 2).sum())


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def cross_camera_nn_share(
    features: np.ndarray | torch.Tensor,
    true_pids: np.ndarray,
    camids: np.ndarray,
    *,
    max_queries: int = 2048,
) -> float:
    """Share of samples whose most similar image from another camera is the same person.

    Whether the features link the cameras at all, independent of any clustering: when
    this is low, no clustering of these features can make correct cross-camera clusters.

    Args:
        features: (N, D) features (cosine similarity; normalised inside).
        true_pids: (N,) int true identities (all >= 0).
        camids: (N,) int camera of each sample.
        max_queries: the samples asked are at most this many, evenly spaced over the N
            (each against all N), so the cost stays about ``max_queries x N x D``.

    Returns:
        fraction in [0, 1] over the asked samples that have an image in another camera
        (ties: the lower index); NaN when none has (one camera).
    """
    x, inv_norm = as_features(features, who="cross_camera_nn_share")
    n = x.shape[0]
    pids = np.asarray(true_pids).reshape(-1)
    cams = np.asarray(camids).reshape(-1)
    if len(pids) != n or len(cams) != n:
        raise ClusteringError(
            f"cross_camera_nn_share: {n} features but {len(pids)} true_pids and "
            f"{len(cams)} camids"
        )
    asked = np.unique(np.linspace(0, n - 1, num=min(int(max_queries), n)).astype(np.int64))
    cam_t = torch.from_numpy(cams.astype(np.int64)).to(x.device)
    xn = x * inv_norm[:, None]
    hits = total = 0
    step = default_chunk(n)
    for s in range(0, len(asked), step):
        q = torch.from_numpy(asked[s : s + step]).to(x.device)
        sims = xn[q] @ xn.T
        sims[cam_t[q][:, None] == cam_t[None, :]] = float("-inf")
        best, nearest = sims.max(dim=1)  # first maximum: the lower index on ties
        found = torch.isfinite(best).cpu().numpy()
        rows = asked[s : s + step][found]
        total += len(rows)
        hits += int((pids[nearest.cpu().numpy()[found]] == pids[rows]).sum())
    return hits / total if total else float("nan")


def label_quality(
    pred_labels: np.ndarray, true_pids: np.ndarray, camids: np.ndarray
) -> dict[str, float | int]:
    """Compare pseudo-labels with true identities.

    Args:
        pred_labels: (N,) int cluster ids, -1 = outlier.
        true_pids: (N,) int ground-truth identities, all >= 0.
        camids: (N,) int camera ids.

    Returns a dict (ints and floats, fractions in [0, 1] except ARI in [-1, 1]):
        num_samples, num_true_ids: N and the number of distinct true identities.
        num_clusters: distinct predicted ids >= 0.
        num_outliers, outlier_ratio: samples labelled -1, count and fraction of N.
        ari, nmi: scikit-learn adjusted Rand index and normalised mutual information
            (arithmetic mean) on ALL samples, each outlier counted as its own singleton
            cluster (so a method cannot score well by discarding hard samples).
        ari_clustered, nmi_clustered: the same on the non-outliers only (NaN when every
            sample is an outlier).
        pair_precision, pair_recall, pair_f1: over unordered sample pairs; a predicted
            pair is two samples in the same predicted cluster (outliers form no pairs), a
            true pair two samples of the same identity among all N. Precision =
            correct / predicted pairs, recall = correct / true pairs; a ratio with a zero
            denominator is 0.0. Counted from a sparse contingency table, never N^2 pairs.
        multi_camera_share: fraction of predicted clusters whose samples come from >= 2
            cameras (0.0 when there is no cluster).
        cross_camera_pairs, cross_camera_pair_precision: predicted pairs whose two
            samples come from different cameras, and the share of them that are one
            identity (0.0 without such pairs): a high multi-camera share is only worth
            something when these pairs are right.
    """
    pred = np.asarray(pred_labels)
    true = np.asarray(true_pids)
    cam = np.asarray(camids)
    n = len(pred)
    for name, a in (("pred_labels", pred), ("true_pids", true), ("camids", cam)):
        if a.ndim != 1 or len(a) != n or not np.issubdtype(a.dtype, np.integer):
            raise ClusteringError(
                f"label_quality: {name} must be a 1-D integer array of length {n} like "
                f"pred_labels, got shape {a.shape} dtype {a.dtype}"
            )
    if n == 0:
        raise ClusteringError("label_quality: no samples (empty pred_labels)")
    if (true < 0).any():
        raise ClusteringError(
            "label_quality: true_pids contain negative (unknown) identities; call it only "
            "when the ground truth is known"
        )
    pred, true, cam = pred.astype(np.int64), true.astype(np.int64), cam.astype(np.int64)

    clustered = pred >= 0
    n_out = int(n - clustered.sum())
    # Outliers as singletons: fresh ids above every real cluster id.
    pred_all = pred.copy()
    pred_all[~clustered] = (pred.max(initial=-1) + 1) + np.arange(n_out)

    # Sparse contingency of (predicted cluster, true id) over clustered samples.
    _, cell = np.unique(
        np.stack([pred[clustered], true[clustered]], axis=1), axis=0, return_counts=True
    )
    _, cluster_sizes = np.unique(pred[clustered], return_counts=True)
    _, id_sizes = np.unique(true, return_counts=True)
    tp, pred_pairs, true_pairs = _pairs(cell), _pairs(cluster_sizes), _pairs(id_sizes)
    precision, recall = _ratio(tp, pred_pairs), _ratio(tp, true_pairs)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    # Cross-camera pairs: all pairs of a cluster minus those inside one camera of it.
    _, cell_cam = np.unique(
        np.stack([pred[clustered], true[clustered], cam[clustered]], axis=1), axis=0,
        return_counts=True,
    )
    _, cluster_cam_sizes = np.unique(
        np.stack([pred[clustered], cam[clustered]], axis=1), axis=0, return_counts=True
    )
    cross_pairs = pred_pairs - _pairs(cluster_cam_sizes)
    cross_right = tp - _pairs(cell_cam)

    cluster_cams = np.unique(np.stack([pred[clustered], cam[clustered]], axis=1), axis=0)
    _, cams_per_cluster = np.unique(cluster_cams[:, 0], return_counts=True)
    if clustered.any():
        ari_c = float(adjusted_rand_score(true[clustered], pred[clustered]))
        nmi_c = float(normalized_mutual_info_score(true[clustered], pred[clustered]))
    else:
        ari_c = nmi_c = float("nan")
    return {
        "num_samples": n,
        "num_true_ids": len(id_sizes),
        "num_clusters": len(cluster_sizes),
        "num_outliers": n_out,
        "outlier_ratio": n_out / n,
        "ari": float(adjusted_rand_score(true, pred_all)),
        "nmi": float(normalized_mutual_info_score(true, pred_all)),
        "ari_clustered": ari_c,
        "nmi_clustered": nmi_c,
        "pair_precision": precision,
        "pair_recall": recall,
        "pair_f1": f1,
        "multi_camera_share": _ratio(int((cams_per_cluster >= 2).sum()), len(cluster_sizes)),
        "cross_camera_pairs": cross_pairs,
        "cross_camera_pair_precision": _ratio(cross_right, cross_pairs),
    }
