"""Helpers the methods share to turn an epoch's inputs into cluster calls.

Each is a small decision a method makes about *what* the ``unreid.cluster``
functions run with (which camera ids, which distance and knobs, which seed for this
epoch) or about what their result means for training (no cluster at all stops it);
:func:`density_labels` is the one Jaccard + DBSCAN clustering every density method
runs, composed of the functions in :mod:`unreid.cluster`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unreid.cluster import (
    CameraJaccard,
    auto_cluster_params,
    jaccard_dbscan,
    num_clusters,
    shrink_k,
)
from unreid.config import Config
from unreid.errors import ConfigError, TrainingError
from unreid.methods.base import LabelInputs

__all__ = ["JACCARD_KINDS", "camera_ids", "camera_jaccard", "density_labels",
           "require_clusters", "round_seed"]

JACCARD_KINDS = ("plain", "camera_aware")  # cluster.jaccard
# CA-Jaccard's official first-epoch query expansion (k2_intra, k2_inter)
_WARMUP_K2 = (3, 3)


def density_labels(
    cfg: Config,
    features: torch.Tensor | np.ndarray,
    camids: np.ndarray,
    epoch: int,
    *,
    fit_k: bool = False,
    warn: bool = True,
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """The epoch's Jaccard + DBSCAN labels of ``features`` (N, D), the knobs they were made
    with, and what to log: the one density clustering every method runs.

    The distance is the plain Jaccard one, or with ``cluster.jaccard=camera_aware`` the
    camera-aware one (:func:`camera_jaccard`: ``camids`` and the camera widths, the
    first-epoch warm-up included). ``cluster.auto`` off: :func:`unreid.cluster.jaccard_dbscan`
    at ``cluster.k1``, ``k2``, ``eps``, ``min_samples`` as configured, and no log entry.
    On: the knobs are chosen on that same distance from these features
    (:func:`unreid.cluster.auto_cluster_params`, every epoch, since the features change)
    and the labels are the choice's own (the graph is built once), logged as ``{"auto":
    {k1, k2, eps, min_samples, ..., jaccard, camera_widths, reason}}`` for the epoch
    record's ``info``. On the plain distance ``camids`` (:func:`camera_ids`; one camera:
    not used) let the choice prefer the k1 whose clusters several cameras see.

    Args:
        cfg: reads ``cluster`` (auto, k1, k2, eps, min_samples, knn, jaccard) and
            ``camera`` (the CA-Jaccard widths).
        features: (N, D) float features (L2-normalised inside).
        camids: (N,) int camera of each sample (zeros without cameras).
        epoch: 0-based; epoch 0 uses CA-Jaccard's warm-up k2.
        fit_k: lower the configured k1, k2 to fit fewer than k1 samples
            (:func:`unreid.cluster.shrink_k`) instead of failing (the auto choice always
            fits): for a count that any set must give.
        warn: False silences the "all samples are outliers" warning of the configured
            knobs (the auto choice never warns: leaving every sample out is one of the
            outcomes it compares).

    Returns ``(labels (N,) int64 with -1 for outliers, the knobs {"k1", "k2", "eps",
    "min_samples"} (k1 and k2 unused by the camera-aware distance), info)``.
    """
    c = cfg.cluster
    camera = camera_jaccard(cfg, camids, epoch)
    if bool(c.auto):
        choice = auto_cluster_params(features, search=str(c.knn),
                                     camids=camids if camera is None else None, camera=camera)
        return choice.labels, choice.params(), {"auto": choice.as_dict()}
    k1, k2 = int(c.k1), int(c.k2)
    if fit_k:
        k1, k2 = shrink_k(k1, k2, int(features.shape[0]))
    params: dict[str, Any] = {"k1": k1, "k2": k2, "eps": float(c.eps),
                              "min_samples": int(c.min_samples)}
    labels = jaccard_dbscan(features, **params, knn=str(c.knn), camera=camera, warn=warn)
    return labels, params, {}


def camera_jaccard(cfg: Config, camids: np.ndarray, epoch: int) -> CameraJaccard | None:
    """What makes a method's Jaccard + DBSCAN camera-aware (``cluster.jaccard``), or None.

    ``plain``: None (the plain Jaccard distance). ``camera_aware``: ``camids`` (N,) and
    the widths ``camera.k1_intra``, ``k1_inter``, ``k2_intra``, ``k2_inter``; in the
    first epoch (``epoch`` 0-based) ``k2`` is 3/3, the official CA-Jaccard code's warm-up.
    """
    kind = str(cfg.cluster.jaccard)
    if kind == "plain":
        return None
    if kind != "camera_aware":
        raise ConfigError(
            f"cluster.jaccard={kind!r} is unknown: use one of {', '.join(JACCARD_KINDS)}"
        )
    cam = cfg.camera
    k2_intra, k2_inter = _WARMUP_K2 if epoch == 0 else (cam.k2_intra, cam.k2_inter)
    return CameraJaccard(np.asarray(camids, dtype=np.int64), k1_intra=int(cam.k1_intra),
                         k1_inter=int(cam.k1_inter), k2_intra=int(k2_intra),
                         k2_inter=int(k2_inter))


def camera_ids(inputs: LabelInputs) -> np.ndarray:
    """(N,) int64 camera of each sample, all 0 when the data has no camera labels
    (a camera-aware step then treats every image as one camera)."""
    camids = np.asarray(inputs.camids, dtype=np.int64)
    return camids if inputs.has_cameras else np.zeros_like(camids)


def round_seed(seed: int, epoch: int) -> int:
    """The clustering seed of ``epoch``: an independent stream per (``cluster.seed``, epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def require_clusters(labels: np.ndarray, epoch: int, *, knob: str, value: float) -> int:
    """Number of clusters in (N,) ``labels``; a one-line TrainingError naming ``knob`` (set
    to ``value``) when there is none, since a head with no class cannot train."""
    num = num_clusters(labels)
    if num == 0:
        raise TrainingError(
            f"clustering at epoch {epoch + 1} found no cluster: all {np.size(labels)} training "
            f"images are outliers at {knob}={value}; raise {knob} (or lower "
            "cluster.min_samples)"
        )
    return num
