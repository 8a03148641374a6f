"""Choose the Jaccard + DBSCAN knobs (k1, k2, eps, min_samples) from the features themselves.

The papers' values (k1 30, k2 6, eps 0.6, min_samples 4) were tuned on Market-1501,
about 17 images per person over 6 cameras. With a few images per person a
30-neighbour k-reciprocal set is mostly other people, the Jaccard distances of the
true pairs rise, and DBSCAN either drops almost everything as outliers or chains
everyone into a few giant clusters (on a 2-images-per-camera set: 89 % outliers).

:func:`auto_cluster_params` clusters the features at a small grid of candidates
(``k1`` in :data:`K1_CHOICES` up to N, ``k2 = max(2, round(k1 / 5))`` as the papers'
ratio, ``eps`` in :data:`EPS_CHOICES`, ``min_samples`` in :data:`MIN_SAMPLES_CHOICES`)
restricted to k1 between the images per identity estimated from the neighbour
similarities (:func:`estimate_images_per_id`) and ``max(10, 3x)`` that, and
``min_samples`` at most that estimate, and keeps the candidate that finds the most
clusters. Both failure modes lose clusters:
too strict a setting turns people into outliers, too loose a one merges them, so the
count peaks between the two, at the granularity the features support. Measured with
``bench/auto_cluster.py`` (ImageNet features, no training): equal to the best
hand-tuned grid point on CUHK03 and within 0.011 ARI of it (or above) on the
synthetic world with 2-4 images per identity per camera, where the papers' values
fail; with 8-16 images per camera on such weak
features the count prefers fragments of people (k1 5, many pairs) and ends below the
papers' values at 16. Ties go to fewer outliers, then to the smaller k1. One Jaccard
graph is computed per k1 (with ``eps``'s largest value as cutoff); each (eps,
min_samples) is then a cheap DBSCAN.

The choice is a pure function of the features: a run that re-chooses every epoch
(the features change as the model trains) and a resumed run choose the same.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from unreid.cluster.dbscan import dbscan
from unreid.cluster.jaccard import jaccard_distance
from unreid.cluster.knn import knn
from unreid.errors import ClusteringError

__all__ = [
    "EPS_CHOICES",
    "K1_CHOICES",
    "MIN_SAMPLES_CHOICES",
    "AutoChoice",
    "auto_cluster_params",
    "estimate_images_per_id",
    "k2_for",
]

K1_CHOICES = (5, 10, 20, 30)
EPS_CHOICES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
MIN_SAMPLES_CHOICES = (2, 3, 4)


def estimate_images_per_id(features: np.ndarray | torch.Tensor, max_k: int = 40) -> int:
    """Images per identity, from where each sample's neighbour similarities drop most.

    For every sample the cosine similarities to its ``max_k`` nearest neighbours are
    sorted; the largest drop between consecutive ones falls after the last image of its
    own identity when the features separate people (r neighbours, so r + 1 images). The
    median over samples is the estimate, at least 2 and at most ``max_k``.

    Args:
        features: (N, D) float features, N >= 3.
        max_k: neighbours looked at per sample.

    Returns the estimate (an int; weak features that do not separate people give a small
    one, 2-3, which is also where small neighbourhoods cluster best).
    """
    n = int(features.shape[0])
    k = min(n, int(max_k) + 1)
    if k < 4:
        return 2
    _, sims = knn(features, k)
    drops = sims[:, 1:-1] - sims[:, 2:]  # drop after the r-th neighbour, r = 1..k-2
    return int(min(max(np.median(drops.argmax(axis=1) + 1) + 1, 2), max_k))


def k2_for(k1: int) -> int:
    """Query-expansion size for ``k1``: the papers' ratio 30 : 6, at least 2, at most k1."""
    return min(int(k1), max(2, round(int(k1) / 5)))


@dataclass(frozen=True)
class AutoChoice:
    """The chosen knobs and why.

    Attributes:
        k1, k2, eps, min_samples: the Jaccard + DBSCAN settings to cluster with.
        num_clusters, outlier_share: what they give on the features they were chosen on.
        images_per_cluster: clustered samples / clusters (an estimate of images per
            identity at the chosen granularity).
        candidates: settings tried.
        reason: one line for the log, e.g. ``"most clusters (291, 33 % outliers) of 108
            candidates; ~2.8 images per cluster"``.
    """

    k1: int
    k2: int
    eps: float
    min_samples: int
    num_clusters: int
    outlier_share: float
    images_per_cluster: float
    candidates: int
    images_per_id: int
    reason: str

    def params(self) -> dict[str, float | int]:
        """``{"k1", "k2", "eps", "min_samples"}``: keyword arguments of
        :func:`unreid.cluster.jaccard_dbscan`."""
        return {"k1": self.k1, "k2": self.k2, "eps": self.eps, "min_samples": self.min_samples}

    def as_dict(self) -> dict[str, float | int | str]:
        """Every field, JSON-able (for the epoch record)."""
        return asdict(self)


def auto_cluster_params(
    features: np.ndarray | torch.Tensor,
    *,
    k1_choices: tuple[int, ...] = K1_CHOICES,
    eps_choices: tuple[float, ...] = EPS_CHOICES,
    min_samples_choices: tuple[int, ...] = MIN_SAMPLES_CHOICES,
    search: str = "auto",
) -> AutoChoice:
    """Choose k1, k2, eps and min_samples for :func:`unreid.cluster.jaccard_dbscan` on
    ``features``: the candidate with the most clusters (see the module docstring).

    Args:
        features: (N, D) float features, N >= 2 (L2-normalised inside).
        k1_choices: neighbourhood sizes tried (those above N are replaced by N).
        eps_choices: DBSCAN radii tried, each in (0, 1].
        min_samples_choices: DBSCAN core sizes tried, each >= 2.
        search: the Jaccard graphs' neighbour search (``cluster.knn``: auto, exact, faiss;
            see :func:`unreid.cluster.jaccard_distance`).

    Returns an :class:`AutoChoice`. Raises :class:`ClusteringError` for fewer than 2
    samples or empty/out-of-range choices.
    """
    n = int(features.shape[0])
    if n < 2:
        raise ClusteringError(f"auto_cluster_params: need at least 2 samples, got {n}")
    if not k1_choices or not eps_choices or not min_samples_choices:
        raise ClusteringError("auto_cluster_params: every choice list needs a value")
    if not all(0.0 < float(e) <= 1.0 for e in eps_choices):
        raise ClusteringError(f"auto_cluster_params: eps choices {eps_choices} must lie in (0, 1]")
    if min(min_samples_choices) < 2 or min(k1_choices) < 1:
        raise ClusteringError("auto_cluster_params: min_samples choices must be >= 2, k1 >= 1")
    per_id = estimate_images_per_id(features)
    # k1 at least the images of one person (a smaller k-reciprocal set splits people into
    # fragments that only differ in which of them they hold) and not far beyond them
    # (a larger one fills with other people); min_samples at most one person's images.
    k1s = sorted({min(int(k), n) for k in k1_choices
                  if per_id <= k <= max(10, 3 * per_id)}) or [min(max(k1_choices), n)]
    cores = sorted({int(m) for m in min_samples_choices if m <= max(2, per_id)}) \
        or [min(int(m) for m in min_samples_choices)]
    radii = sorted({float(e) for e in eps_choices})
    best: tuple | None = None
    tried = 0
    with warnings.catch_warnings():  # "all samples are outliers" is an expected candidate
        warnings.simplefilter("ignore", UserWarning)
        for k1 in k1s:
            k2 = k2_for(k1)
            dist = jaccard_distance(features, k1, k2, cutoff=radii[-1],
                                    search=search)  # type: ignore[arg-type]
            for eps in radii:
                for ms in cores:
                    tried += 1
                    labels = dbscan(dist, eps, min_samples=ms)
                    clusters = int(labels.max(initial=-1)) + 1
                    outliers = int((labels < 0).sum())
                    # most clusters, then fewest outliers, then the smaller k1, eps, ms
                    key = (-clusters, outliers, k1, eps, ms)
                    if best is None or key < best[0]:
                        best = (key, k1, k2, eps, ms, clusters, outliers)
    assert best is not None
    _, k1, k2, eps, ms, clusters, outliers = best
    per_cluster = (n - outliers) / clusters if clusters else 0.0
    share = outliers / n
    reason = (f"~{per_id} images per identity (similarity gap); most clusters ({clusters}, "
              f"{100 * share:.0f} % outliers) of {tried} candidates")
    return AutoChoice(k1=k1, k2=k2, eps=eps, min_samples=ms, num_clusters=clusters,
                      outlier_share=share, images_per_cluster=per_cluster, candidates=tried,
                      images_per_id=per_id, reason=reason)
