"""k-means based sample selection: RSL's reliable and soft labels, PUL's baseline.

Both keep the samples that lie close to a k-means centre (cosine similarity
strictly greater than ``lambda_``) and train a classifier on them. RSL first
clusters *inside each camera* (a camera's background cannot then pull a
cluster together) and gives every rejected sample a soft target over the
reliable classes instead of dropping it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from unreid.cluster.kmeans import _check_seed, _unit_rows, kmeans
from unreid.errors import ClusteringError

__all__ = ["camera_cluster_counts", "pul_select", "reliable_soft_labels", "select_above"]

PerCameraK = int | Sequence[int] | Mapping[int, int] | None


def _check_count(value: object, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ClusteringError(f"{who}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_lambda(lambda_: float, who: str) -> float:
    if not math.isfinite(float(lambda_)):
        raise ClusteringError(f"{who}: lambda_ must be finite (cluster.lambda_), got {lambda_!r}")
    return float(lambda_)


def camera_cluster_counts(camids: np.ndarray, per_camera_k: PerCameraK, M: int) -> dict[int, int]:
    """Number of k-means clusters M_k for each camera id present in ``camids``.

    ``per_camera_k`` may be:

    - ``None`` or ``0`` (the default of ``cluster.per_camera_k``): derived from M by
      each camera's share of the images, ``M_k = max(1, floor(M * n_k / N + 0.5))``
      (round half up);
    - an int >= 1: the same M_k for every camera;
    - a sequence indexed by camera id (camids are 0-based), or a mapping camid -> M_k,
      covering every camera present.

    Every M_k is then capped at the camera's image count n_k (a camera with fewer
    images than clusters puts each image in its own cluster).
    """
    who = "reliable_soft_labels"
    cams, n_k = np.unique(np.asarray(camids, dtype=np.int64), return_counts=True)
    n = int(n_k.sum())
    if per_camera_k is None or (
        isinstance(per_camera_k, int | np.integer)
        and not isinstance(per_camera_k, bool)
        and per_camera_k == 0
    ):
        wanted = np.maximum(1, np.floor(M * n_k / n + 0.5).astype(np.int64))
    elif isinstance(per_camera_k, int | np.integer) and not isinstance(per_camera_k, bool):
        wanted = np.full(len(cams), _check_count(per_camera_k, "per_camera_k", who))
    elif isinstance(per_camera_k, Mapping | Sequence | np.ndarray):
        counts: Mapping[int, int] | Sequence[int] = (
            per_camera_k.tolist() if isinstance(per_camera_k, np.ndarray) else per_camera_k
        )
        is_map = isinstance(counts, Mapping)
        missing = [
            int(c)
            for c in cams
            if (int(c) not in counts if is_map else not 0 <= c < len(counts))
        ]
        if missing:
            raise ClusteringError(
                f"{who}: per_camera_k gives no cluster count for camera ids {missing[:5]}; "
                "give one per camera or 0 to derive them from M (cluster.per_camera_k)"
            )
        wanted = np.array(
            [_check_count(counts[int(c)], "per_camera_k values", who) for c in cams]
        )
    else:
        raise ClusteringError(
            f"{who}: per_camera_k must be None, an int, a sequence or a mapping, "
            f"got {type(per_camera_k).__name__}"
        )
    return {int(c): int(min(w, cnt)) for c, w, cnt in zip(cams, wanted, n_k)}


def _similarity_to_centre(x: torch.Tensor, labels: np.ndarray, centres: np.ndarray) -> torch.Tensor:
    """Cosine similarity (N,) of each unit row to its own (unit) centre."""
    c = torch.from_numpy(centres).to(x.device)[torch.from_numpy(labels).to(x.device)]
    return (x * c).sum(dim=1)


def reliable_soft_labels(
    features: np.ndarray | torch.Tensor,
    camids: np.ndarray,
    per_camera_k: PerCameraK,
    M: int,
    lambda_: float = 0.85,
    t: float = 0.02,
    *,
    seed: int,
    min_keep: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RSL pseudo-labels: reliable hard labels for some samples, soft targets for the rest.

    1. k-means (spherical, :func:`kmeans`) inside each camera k into M_k clusters
       (see :func:`camera_cluster_counts` for ``per_camera_k``);
    2. keep the samples whose cosine similarity to their camera-cluster centre is
       strictly greater than ``lambda_``;
    3. k-means of the kept samples into M clusters: their labels are the reliable
       labels, and the M L2-normalised centres C are the classes;
    4. every other sample f (L2-normalised) gets ``softmax(C f / t)`` over the M classes.

    With one camera the two k-means runs cluster the same set (M_k = M by default).
    Seeds: camera i (in sorted camid order) and the re-clustering use independent
    streams spawned from ``seed``.

    Fewer kept samples than M raises ClusteringError rather than shrinking M: the
    classifier width and the soft-target width are M, so the caller decides (lower
    ``cluster.lambda_`` or ``cluster.num_classes``) instead of getting a silently
    different number of classes.

    Args:
        features: (N, D) float features (L2-normalised here).
        camids: (N,) int camera ids.
        per_camera_k: clusters per camera (None/0 = derived from M, an int, a sequence
            indexed by camid or a mapping camid -> M_k).
        M: number of reliable classes, 1 <= M.
        lambda_: similarity threshold (``cluster.lambda_``), cosine units.
        t: softmax temperature (``cluster.soft_temperature``), > 0.
        seed: integer >= 0.
        min_keep: keep at least this many samples (0: ``lambda_`` alone decides); when
            fewer pass ``lambda_``, the ``min_keep`` most similar are kept, i.e. the
            threshold drops to their similarity (see :func:`select_above`).

    Returns:
        labels: (N,) int64 in [0, M) for selected samples, -1 for the others.
        soft_targets: (N_unselected, M) float32, rows summing to 1, in the order of
            ``np.flatnonzero(~selected)``.
        selected: (N,) bool.
        similarity: (N,) float64 cosine of each sample to its camera-cluster centre
            (``similarity > lambda_`` is what lambda alone keeps, before the floor).
    """
    who = "reliable_soft_labels"
    x = _unit_rows(features, who=who)
    n = x.shape[0]
    cam = np.asarray(camids)
    if cam.shape != (n,) or not np.issubdtype(cam.dtype, np.integer):
        raise ClusteringError(
            f"{who}: camids must be an (N,) = ({n},) integer array, got {cam.shape} {cam.dtype}"
        )
    M = _check_count(M, "M (cluster.num_classes)", who)
    lambda_ = _check_lambda(lambda_, who)
    if not (math.isfinite(float(t)) and float(t) > 0):
        raise ClusteringError(f"{who}: t must be > 0 (cluster.soft_temperature), got {t!r}")
    streams = np.random.SeedSequence(_check_seed(seed, who))
    counts = camera_cluster_counts(cam, per_camera_k, M)
    seeds = [int(s.generate_state(1)[0]) for s in streams.spawn(len(counts) + 1)]

    similarity = np.zeros(n, dtype=np.float64)
    for (c, k_c), s in zip(counts.items(), seeds):
        idx = np.flatnonzero(cam == c)
        xc = x[torch.from_numpy(idx).to(x.device)]
        lab, centres = kmeans(xc, k_c, seed=s)
        similarity[idx] = _similarity_to_centre(xc, lab, centres).double().cpu().numpy()
    selected = select_above(similarity, lambda_, min_keep)

    n_sel = int(selected.sum())
    if n_sel < M:
        raise ClusteringError(
            f"{who}: only {n_sel} of {n} samples have cosine similarity > lambda_={lambda_:g} "
            f"to their camera-cluster centre, fewer than M={M} classes; lower cluster.lambda_ "
            "or cluster.num_classes, or set cluster.min_selected"
        )
    keep = torch.from_numpy(np.flatnonzero(selected)).to(x.device)
    rel_labels, centres = kmeans(x[keep], M, seed=seeds[-1])
    labels = np.full(n, -1, dtype=np.int64)
    labels[selected] = rel_labels

    rest = torch.from_numpy(np.flatnonzero(~selected)).to(x.device)
    centres_t = torch.from_numpy(centres).to(x.device)
    soft = torch.softmax((x[rest] @ centres_t.T) / float(t), dim=1)
    return labels, soft.cpu().numpy().astype(np.float32, copy=False), selected, similarity


def pul_select(
    features: np.ndarray | torch.Tensor,
    K: int,
    lambda_: float,
    seed: int,
    *,
    min_keep: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PUL's selection (Fan et al. 2018): global k-means into K, keep samples near their centre.

    Args:
        features: (N, D) float features (L2-normalised here).
        K: number of k-means clusters, 1 <= K <= N (``cluster.num_classes``).
        lambda_: keep samples whose cosine similarity to their centre is strictly
            greater than this (``cluster.lambda_``; PUL raises it every round).
        seed: integer >= 0.
        min_keep: keep at least this many samples (see :func:`select_above`).

    Returns:
        labels: (N,) int64, the k-means cluster id in [0, K) for selected samples and -1
            for the others. Ids are not renumbered, so a label indexes ``centres`` (a
            cluster may have no selected sample).
        centres: (K, D) float32 L2-normalised k-means centres (all samples took part).
        selected: (N,) bool.
        similarity: (N,) float64 cosine of each sample to its centre (``similarity >
            lambda_`` is what lambda alone keeps, before the floor).

    Raises:
        ClusteringError: bad features or K, or no sample selected.
    """
    who = "pul_select"
    x = _unit_rows(features, who=who)
    lambda_ = _check_lambda(lambda_, who)
    labels, centres = kmeans(x, K, seed=_check_seed(seed, who))
    similarity = _similarity_to_centre(x, labels, centres).double().cpu().numpy()
    selected = select_above(similarity, lambda_, min_keep)
    if not selected.any():
        raise ClusteringError(
            f"{who}: no sample has cosine similarity > lambda_={lambda_:g} to its k-means "
            "centre; lower cluster.lambda_ (or cluster.lambda_step)"
        )
    labels[~selected] = -1
    return labels, centres, selected, similarity


def select_above(similarity: np.ndarray, lambda_: float, min_keep: int = 0) -> np.ndarray:
    """(N,) bool: ``similarity > lambda_``, or, when fewer than ``min_keep`` pass, the
    ``min_keep`` most similar samples (ties at the cut all kept, ties broken by index
    nowhere: the cut is a similarity value).

    The fallback keeps a long run alive when training spreads the features so that
    almost nothing clears a fixed cosine threshold (the threshold then effectively
    drops to the ``min_keep``-th largest similarity; callers log it).
    """
    sim = np.asarray(similarity, dtype=np.float64).reshape(-1)
    selected = sim > lambda_
    k = min(int(min_keep), sim.size)
    if k > 0 and int(selected.sum()) < k:
        cut = np.partition(sim, sim.size - k)[sim.size - k]
        selected = sim >= cut
    return selected
