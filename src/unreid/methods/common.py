"""Helpers the methods share to turn an epoch's inputs into cluster calls.

Each is a small decision a method makes about *what* the ``unreid.cluster``
functions run with (which camera ids, which seed for this epoch) or about what
their result means for training (no cluster at all stops it); the clustering
itself is in :mod:`unreid.cluster`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unreid.cluster import CameraJaccard, auto_cluster_params, num_clusters
from unreid.config import ClusterConfig, Config
from unreid.errors import ConfigError, TrainingError
from unreid.methods.base import LabelInputs

__all__ = ["JACCARD_KINDS", "camera_ids", "camera_jaccard", "density_params",
           "require_clusters", "round_seed"]

JACCARD_KINDS = ("plain", "camera_aware")  # cluster.jaccard
# CA-Jaccard's official first-epoch query expansion (k2_intra, k2_inter)
_WARMUP_K2 = (3, 3)


def density_params(
    c: ClusterConfig, features: torch.Tensor | np.ndarray, camids: np.ndarray | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Jaccard + DBSCAN knobs to cluster ``features`` (N, D) with, and what to log.

    ``cluster.auto`` off: ``cluster.k1``, ``k2``, ``eps``, ``min_samples`` as configured
    and no log entry. On: chosen from these features by
    :func:`unreid.cluster.auto_cluster_params` (called every epoch, since the features
    change), logged as ``{"auto": {k1, k2, eps, min_samples, ..., reason}}`` for the
    epoch record's ``info``. ``camids`` (N,) (:func:`camera_ids`; ``None`` or one camera:
    not used) lets the choice prefer clusters that several cameras see.
    """
    if not bool(c.auto):
        return {"k1": int(c.k1), "k2": int(c.k2), "eps": float(c.eps),
                "min_samples": int(c.min_samples)}, {}
    choice = auto_cluster_params(features, search=str(c.knn), camids=camids)
    return choice.params(), {"auto": choice.as_dict()}


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
