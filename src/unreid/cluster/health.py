"""Label health without ground truth: is this epoch's clustering usable for training?

:func:`label_health` measures one epoch's pseudo-labels with nothing but the labels,
the camera ids and the previous epoch's labels: the share of outliers, the share of
the largest cluster, singleton clusters, clusters per camera, the share of clusters
that span cameras, and how much the labels agree with the previous epoch's (a
label-free progress signal: labels that keep changing mean the features do too).
:func:`health_warnings` turns the values outside a sane range (:data:`LIMITS`) into
one line each, naming the symptom and the knob that moves it; :func:`run_verdict`
the one line a run ends with when it got worse or its labels degenerated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import adjusted_rand_score

from unreid.errors import ClusteringError

__all__ = [
    "LIMITS",
    "LABELLERS",
    "HealthLimits",
    "health_warnings",
    "label_health",
    "outliers_as_singletons",
    "run_verdict",
]


def outliers_as_singletons(labels: np.ndarray) -> np.ndarray:
    """(N,) labels with each ``-1`` replaced by a fresh id of its own (above every cluster
    id), so that agreement scores count an outlier as a cluster of one."""
    out = np.asarray(labels, dtype=np.int64).copy()
    bad = out < 0
    out[bad] = out.max(initial=-1) + 1 + np.arange(int(bad.sum()))
    return out


def label_health(
    labels: np.ndarray,
    camids: np.ndarray,
    previous: np.ndarray | None = None,
    *,
    has_cameras: bool = True,
) -> dict[str, float | int | list[int] | None]:
    """Health numbers of one epoch's pseudo-labels.

    Args:
        labels: (N,) int cluster ids, ``-1`` = outlier (not trained as a class).
        camids: (N,) int camera of each sample.
        previous: (N,) int labels of the same samples at the previous epoch, or None.
        has_cameras: False when the camera ids carry no information (one camera for
            all): the camera numbers are then None.

    Returns a dict:
        num_samples, num_clusters, num_outliers: counts.
        outlier_share: outliers / N, in [0, 1].
        largest_cluster_share: size of the largest cluster / N (0.0 without a cluster).
        singletons: clusters with one sample.
        clusters_per_camera: list, for each camera id in ascending order, the number of
            clusters holding at least one of its samples (None without cameras).
        multi_camera_share: share of clusters whose samples come from >= 2 cameras
            (None without cameras or without a cluster).
        agreement: adjusted Rand index between ``previous`` and ``labels``, outliers
            counted as singletons (1.0 = the same partition; None without ``previous``).
    """
    lab = np.asarray(labels)
    cam = np.asarray(camids)
    n = len(lab)
    if lab.ndim != 1 or cam.shape != lab.shape or n == 0:
        raise ClusteringError(
            f"label_health: labels and camids must be 1-D of one non-zero length, got "
            f"shapes {lab.shape} and {cam.shape}"
        )
    lab, cam = lab.astype(np.int64), cam.astype(np.int64)
    clustered = lab >= 0
    ids, sizes = np.unique(lab[clustered], return_counts=True)
    out: dict[str, float | int | list[int] | None] = {
        "num_samples": n,
        "num_clusters": len(ids),
        "num_outliers": int(n - clustered.sum()),
        "outlier_share": float(n - clustered.sum()) / n,
        "largest_cluster_share": float(sizes.max()) / n if len(sizes) else 0.0,
        "singletons": int((sizes == 1).sum()),
        "clusters_per_camera": None,
        "multi_camera_share": None,
        "agreement": None,
    }
    if has_cameras:
        pairs = np.unique(np.stack([lab[clustered], cam[clustered]], axis=1), axis=0)
        cameras = np.unique(cam)
        out["clusters_per_camera"] = [int((pairs[:, 1] == c).sum()) for c in cameras]
        if len(ids):
            _, cams_per_cluster = np.unique(pairs[:, 0], return_counts=True)
            out["multi_camera_share"] = float((cams_per_cluster >= 2).mean())
    if previous is not None:
        prev = np.asarray(previous)
        if prev.shape != lab.shape:
            raise ClusteringError(
                f"label_health: previous labels have shape {prev.shape}, labels {lab.shape}"
            )
        out["agreement"] = float(adjusted_rand_score(outliers_as_singletons(prev),
                                                     outliers_as_singletons(lab)))
    return out


@dataclass(frozen=True)
class HealthLimits:
    """The sane range of each health number (a value beyond its limit warns).

    Attributes:
        max_outlier_share: more outliers than this leaves too little to train on.
        max_largest_share: a cluster holding more than this share of the samples is
            several people merged (a person is rarely a fifth of a re-ID training set).
        max_singleton_share: more than this share of the clusters with one sample.
        min_multi_camera_share: fewer clusters than this spanning cameras means the
            clusters follow the cameras (checked with >= 2 cameras and >= 10 clusters).
        min_agreement: consecutive epochs' labels agreeing less than this (ARI) means
            the labels jump around instead of settling.
    """

    max_outlier_share: float = 0.5
    max_largest_share: float = 0.2
    max_singleton_share: float = 0.5
    min_multi_camera_share: float = 0.05
    min_agreement: float = 0.2


LIMITS = HealthLimits()


# What moves each symptom, by how the labels were made: "density" (Jaccard + DBSCAN:
# cluster_contrast, sfe_cr, cap) or "kmeans" (k-means classes and a cosine selection: pul,
# rsl), whose unlabelled samples are the unselected ones and whose class count is set, not
# found. Entries: (what the unlabelled samples are, outlier knobs, merged-people knobs,
# one-sample-cluster knob, camera knobs); None where cluster.auto has no say.
_ADVICE: dict[str, tuple[str, str, str, str, str]] = {
    "density": (
        "outliers", "lower cluster.min_samples or raise cluster.eps",
        "lower cluster.eps or cluster.k1", "raise cluster.min_samples",
        "raise cluster.eps, or link the cameras with cluster.jaccard=camera_aware or "
        "method.name=cap"),
    "kmeans": (
        "not selected (cosine to their centre below cluster.lambda_)",
        "lower cluster.lambda_ or raise cluster.min_selected",
        "raise cluster.num_classes", "lower cluster.num_classes",
        "k-means cannot link them; a camera-aware method can (method.name=cap)"),
}
LABELLERS = tuple(_ADVICE)


def health_warnings(health: dict, limits: HealthLimits = LIMITS, *,
                    auto: bool = False, labeller: str = "density") -> list[str]:
    """One line per health number outside its sane range (see :class:`HealthLimits`),
    naming the symptom and the knob that moves it; ``[]`` when all are in range.

    ``health`` is a dict from :func:`label_health`; ``auto`` says the knobs were chosen
    by ``cluster.auto`` (the lines then say to set them by hand instead of suggesting it);
    ``labeller`` is how the labels were made (:data:`LABELLERS`: ``density`` clustering or
    ``kmeans`` with a selection), which decides the knobs named.
    """
    if labeller not in _ADVICE:
        raise ValueError(f"labeller={labeller!r}: use one of {', '.join(LABELLERS)}")
    unlabelled, outlier_knobs, merged_knobs, singleton_knob, camera_knobs = _ADVICE[labeller]
    density = labeller == "density"
    alt = ""
    if density:
        alt = ("; cluster.auto chose them: set cluster.auto=false to set them by hand" if auto
               else ", or use cluster.auto")
    lines = []
    n_clusters = int(health["num_clusters"])
    outliers = float(health["outlier_share"])
    if outliers > limits.max_outlier_share:
        lines.append(f"{100 * outliers:.0f} % of samples are {unlabelled}: {outlier_knobs}{alt}")
    largest = float(health["largest_cluster_share"])
    if largest > limits.max_largest_share:
        lines.append(
            f"the largest cluster holds {100 * largest:.0f} % of the samples (people merged): "
            f"{merged_knobs}{alt}"
        )
    singles = int(health["singletons"])
    if n_clusters and singles / n_clusters > limits.max_singleton_share:
        lines.append(
            f"{100 * singles / n_clusters:.0f} % of the clusters hold one sample: "
            f"{singleton_knob}"
        )
    multi = health.get("multi_camera_share")
    per_camera = health.get("clusters_per_camera") or []
    if (multi is not None and len(per_camera) >= 2 and n_clusters >= 10
            and float(multi) < limits.min_multi_camera_share):
        lines.append(
            f"only {100 * float(multi):.0f} % of the clusters span two or more cameras (they "
            f"follow the cameras): {camera_knobs}"
        )
    agreement = health.get("agreement")
    if agreement is not None and float(agreement) < limits.min_agreement:
        lines.append(
            f"the labels agree little with the previous epoch's (ARI {float(agreement):.2f}): "
            "training is not settling; lower optim.lr"
        )
    return lines


def run_verdict(records: list[dict], labeller: str = "density") -> str | None:
    """One line when a run ended worse than it started (final mAP below the initial one)
    or with degenerate labels (its last epoch's outliers or largest cluster out of range),
    else None.

    ``records`` are a run's epoch records (``metrics.jsonl``): ``eval`` dicts with
    ``mAP``, ``health`` dicts from :func:`label_health`; ``labeller`` as in
    :func:`health_warnings`.
    """
    evals = [r["eval"] for r in records if isinstance(r.get("eval"), dict) and "mAP" in r["eval"]]
    if len(evals) >= 2 and evals[-1]["mAP"] < evals[0]["mAP"]:
        return (f"warning: the run ends worse than it started (mAP {100 * evals[0]['mAP']:.1f} "
                f"-> {100 * evals[-1]['mAP']:.1f}); see the label health warnings above")
    last = next((r for r in reversed(records) if isinstance(r.get("health"), dict)), None)
    if last is None:
        return None
    h = last["health"]
    # k-means labellers leave samples unselected by design (PUL's self-paced start), so only
    # DBSCAN's outliers count towards degenerate labels
    outliers_count = labeller == "density" and h["outlier_share"] > LIMITS.max_outlier_share
    if outliers_count or h["largest_cluster_share"] > LIMITS.max_largest_share:
        auto = isinstance(last.get("info"), dict) and "auto" in last["info"]
        return ("warning: the final labels are degenerate: "
                f"{health_warnings(h, auto=auto, labeller=labeller)[0]}")
    return None
