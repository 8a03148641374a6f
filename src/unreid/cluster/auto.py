"""Choose the Jaccard + DBSCAN knobs (k1, k2, eps, min_samples) from the features themselves.

The papers' values (k1 30, k2 6, eps 0.6, min_samples 4) were tuned on Market-1501,
about 17 images per person over 6 cameras. With a few images per person a
30-neighbour k-reciprocal set is mostly other people, the Jaccard distances of the
true pairs rise, and DBSCAN either drops almost everything as outliers or chains
everyone into a few giant clusters (on a 2-images-per-camera set: 89 % outliers).

:func:`auto_cluster_params` keeps, on a Jaccard graph, the (``eps`` in
:data:`EPS_CHOICES`, ``min_samples`` in :data:`MIN_SAMPLES_CHOICES` up to the images per
identity estimated from the neighbour similarities, :func:`similarity_gap`) that finds
the most clusters: on one graph both failure modes lose clusters (too strict a setting
turns people into outliers, too loose a one merges them), so the count peaks between
the two. Ties go to fewer outliers, then to the smaller eps and min_samples. ``k2 =
max(2, round(k1 / 5))`` (the papers' ratio). Which graph (``k1``):

- With the camera-aware Jaccard distance (``camera``): that one graph, whatever k1
  (below, after the plain rules).
- With camera ids (two cameras or more): every k1 of :data:`K1_CHOICES`, and the one
  whose count peak holds the most camera-balanced clusters (:func:`balanced_clusters`:
  seen by two cameras, the second holding at least half as many images as the first).
  A person walks past several cameras, while the pieces a too small graph cuts people
  into are near duplicates of one camera, and what a too large graph merges into a
  person are lookalikes of one camera that tip its balance; a count of balanced
  clusters (not their share: merges also span cameras, but fewer of them) peaks on
  whole people. When no graph has one (cameras that never share a cluster, as on
  features that see the camera more than the person) the rule below.
- Without cameras: the smallest of :data:`K1_CHOICES` that holds the estimated images
  per identity and, unless that gap is clear (clarity >= :data:`CLEAR_GAP`, as on clean
  clusters), is also at least :data:`MIN_K1` (at most N / :data:`SMALL_SET_SHARE` on
  tiny sets).

Why k1 is not chosen by the count too: on a small graph (k1 5-10) the count peaks on
fragments of about 3 images whatever the images per identity, because near duplicates
(frames of one moment, one camera) are mutual neighbours first; the count then grows
with N, not with the people (ImageNet features of the synthetic world with 150
identities: 152, 292, 518, 1043 clusters at 2, 4, 8, 16 images per camera), and at 16
per camera it ended below the papers' values. On such weak features the similarity gap
is vague (clarity 1.6-1.8 against 10 and more on clean clusters) and says 2-3 images
per identity on every set; a cosine silhouette and the stability of labels across
neighbouring eps prefer the same fragments, an edge-count estimate of pair agreement
(kNN edges inside clusters / sqrt(pairs)) stops fragmenting 16 per camera but merges
at 2 per camera, and mutual-neighbour counts do not change with the images per
identity (all measured over k1 5-30 x eps 0.3-0.75 x min_samples 2-4). A 15-neighbour
graph is the smallest whose count peak lies on larger pieces of people at 8-16 images
per camera.

Measured with ``bench/auto_cluster.py`` (ImageNet features, no training; 2-camera
synthetic world at 2, 4, 8, 16 images per identity per camera, and CUHK03): with the
cameras, ARI 0.212, 0.204, 0.229, 0.244, 0.168 (k1 5, 5, 15, 15, 10) against the best
hand-tuned grid point 0.200, 0.215, 0.233, 0.264, 0.168, so within 0.02 or above on all
five; without them (k1 15 everywhere) 0.151 at 2 per camera. The margin that picks
k1 5 at 2 per camera is thin (23 balanced clusters against 22 at k1 15), and with twice
the people the cameras choose k1 15 there too (ARI 0.142, best 0.168). On planted people
whose features do see them across cameras the balanced count finds them whole where the
k1 15 floor cuts 16 images per camera into pieces (tests). Cost: one graph per k1 choice
(5) instead of one, on one shared neighbour search: the similarity gap and every graph
read the first columns of the same kNN lists, which are exactly what their own searches
would give (on CUHK03-sized features the searches were most of the time).

On the camera-aware Jaccard distance (``camera``, ``cluster.jaccard=camera_aware``): one
graph, the CA-Jaccard distance with the camera widths (k1_intra, k1_inter, k2_intra,
k2_inter; :func:`unreid.cluster.ca_jaccard_distance`), and eps and min_samples chosen on
it by the same count peak, min_samples capped by the same similarity-gap estimate. The
k1 choices do not apply to it: its neighbour sets are the camera widths, and the
camera-balanced count that picks k1 among plain graphs has no graphs to pick from (the
distance itself links the cameras). The k1 and k2 it reports are the camera-blind rule's
above (no graph built), for the plain graphs a caller builds besides (SFE-CR's
per-camera local clusters). Its radii, :data:`CA_EPS_CHOICES`, are :data:`EPS_CHOICES`
and 0.75: on weak features its distances sit high. On Gaussian noise (600 x 64, 2 random
cameras, the default widths) the nearest-neighbour distances are 0.61 / 0.71 / 0.74
(10th / 50th / 90th percentile) and the count (min_samples 2) peaks at 0.7; on
2,000 x 128 it peaks at 0.75; from 0.8 on both are one cluster. On CUHK03's training
split from ImageNet EfficientNet-Lite0 features (``bench/auto_cluster.py``'s cache;
default widths, min_samples 2) it is 365 clusters (88 % outliers) at eps 0.5, 759
(46 %) at 0.7, 467 (29 %) at 0.75 and 9 (3 %) at 0.8: the peak lies inside the range,
and the official code's 0.5-0.6 (Market-1501, MSMT17) leaves most samples out here. On
clean planted clusters the true pairs lie at 0.03-0.2 and the peak at the low end, as on
the plain graph. On such weak features the peak is no good partition (CUHK03: ARI 0.004
at the peak, at most 0.056 at any eps, min_samples 2-4 and k2 2/4 or 3/3 of this graph,
against the plain choice's 0.168 above); what the camera-aware choice fixes is that the
eps belongs to the distance clustered with. Nothing beyond 0.75 is tried: on these sets
the count only fell there.

The chosen knobs come with the labels they give (:attr:`AutoChoice.labels`): exactly
``jaccard_dbscan``'s at those knobs on the same graph, so the caller does not build the
graph a second time.

The choice is a pure function of the features (and camera ids): a run that re-chooses every epoch
(the features change as the model trains) and a resumed run choose the same.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from scipy import sparse

from unreid.cluster.ca_jaccard import ca_jaccard_distance
from unreid.cluster.dbscan import dbscan
from unreid.cluster.density import CameraJaccard
from unreid.cluster.jaccard import given_neighbours, jaccard_distance
from unreid.cluster.knn import as_features, knn, resolve_search
from unreid.cluster.knn import neighbours as search_neighbours
from unreid.errors import ClusteringError

__all__ = [
    "CA_EPS_CHOICES",
    "EPS_CHOICES",
    "K1_CHOICES",
    "CLEAR_GAP",
    "MIN_K1",
    "MIN_SAMPLES_CHOICES",
    "SMALL_SET_SHARE",
    "AutoChoice",
    "auto_cluster_params",
    "balanced_clusters",
    "estimate_images_per_id",
    "similarity_gap",
    "k2_for",
]

K1_CHOICES = (5, 10, 15, 20, 30)
EPS_CHOICES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
# On the camera-aware graph one more radius: its count peak on weak features lies at
# 0.7-0.75, and from 0.8 on it links nearly everything (see the module docstring).
CA_EPS_CHOICES = (*EPS_CHOICES, 0.75)
MIN_SAMPLES_CHOICES = (2, 3, 4)
# The smallest k-reciprocal graph whose cluster-count peak is not fragments of people
# (see the module docstring).
MIN_K1 = 15
# Similarity-gap clarity (see similarity_gap) from which the images-per-identity estimate
# is trusted to set k1 alone.
CLEAR_GAP = 3.0
# On fewer than MIN_K1 * SMALL_SET_SHARE samples the vague-gap floor is N / SMALL_SET_SHARE.
SMALL_SET_SHARE = 20
# Neighbours the similarity gap looks at per sample (similarity_gap's max_k).
GAP_NEIGHBOURS = 40


def _gap_depth(n: int, max_k: int) -> int:
    """Neighbours (self included) :func:`similarity_gap` reads per sample."""
    return min(int(n), int(max_k) + 1)


def similarity_gap(
    features: np.ndarray | torch.Tensor,
    max_k: int = GAP_NEIGHBOURS,
    *,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[int, float]:
    """Images per identity, from where each sample's neighbour similarities drop most, and
    how clear that drop is.

    For every sample the cosine similarities to its ``max_k`` nearest neighbours are
    sorted; the largest drop between consecutive ones falls after the last image of its
    own identity when the features separate people (r neighbours, so r + 1 images). The
    median over samples is the estimate, at least 2 and at most ``max_k``. The clarity is
    the median ratio of each sample's largest drop to its second largest: about 1.5 on
    features that do not separate people (Gaussian noise, ImageNet features of unseen
    people), 10 and more on clean clusters.

    Args:
        features: (N, D) float features, N >= 3.
        max_k: neighbours looked at per sample.
        neighbours: the exact kNN lists of these features (``(indices (N, K), similarities
            (N, K))``, ``K >= min(N, max_k + 1)``, as :func:`unreid.cluster.knn` sorts them)
            to read instead of searching; the first ``max_k + 1`` columns are used, so the
            answer is the same.

    Returns ``(images_per_id, clarity)``; fewer than 4 samples give ``(2, 1.0)``.
    """
    n = int(features.shape[0])
    k = _gap_depth(n, max_k)
    if k < 4:
        return 2, 1.0
    if neighbours is None:
        _, sims = knn(features, k)
    else:
        _, sims = given_neighbours(neighbours, n, k, who="similarity_gap")
    sims = sims.astype(np.float32, copy=False)  # what knn gives
    drops = sims[:, 1:-1] - sims[:, 2:]  # drop after the r-th neighbour, r = 1..k-2
    per_id = int(min(max(np.median(drops.argmax(axis=1) + 1) + 1, 2), max_k))
    top2 = np.sort(drops, axis=1)[:, -2:]
    clarity = float(np.median(top2[:, 1] / np.maximum(top2[:, 0], 1e-12)))
    return per_id, clarity


def estimate_images_per_id(features: np.ndarray | torch.Tensor, max_k: int = 40) -> int:
    """Images per identity from :func:`similarity_gap` (an int; weak features that do not
    separate people give a small one, 2-3, whatever the truth)."""
    return similarity_gap(features, max_k)[0]


def k2_for(k1: int) -> int:
    """Query-expansion size for ``k1``: the papers' ratio 30 : 6, at least 2, at most k1."""
    return min(int(k1), max(2, round(int(k1) / 5)))


def balanced_clusters(labels: np.ndarray, camids: np.ndarray) -> int:
    """Clusters seen by at least two cameras, the second most frequent of which holds at
    least half as many of the cluster's images as the most frequent.

    A person walks past several cameras; near-duplicate fragments (frames of one moment)
    sit in one camera, and a merge of lookalikes from one camera tips a cluster's balance
    towards it, so neither counts.

    Args:
        labels: (N,) int cluster ids, -1 = outlier.
        camids: (N,) camera of each sample (any integer ids).

    Returns the number of such clusters (0 when every sample is an outlier).
    """
    labels = np.asarray(labels).reshape(-1)
    keep = labels >= 0
    if not keep.any():
        return 0
    _, cam = np.unique(np.asarray(camids).reshape(-1)[keep], return_inverse=True)
    table = np.zeros((int(labels.max()) + 1, int(cam.max()) + 1), dtype=np.int64)
    np.add.at(table, (labels[keep], cam), 1)
    if table.shape[1] < 2:
        return 0
    top = -np.sort(-table, axis=1)
    return int(((top[:, 1] > 0) & (2 * top[:, 1] >= top[:, 0])).sum())


Lists = tuple[np.ndarray, np.ndarray]


def _shared_neighbours(
    x: torch.Tensor, inv_norm: torch.Tensor, deepest_k1: int, search: str
) -> Lists | None:
    """The one kNN search of :func:`auto_cluster_params` on validated features: lists as
    deep as the deepest candidate graph (``deepest_k1``) and the similarity gap read,
    capped at N.

    ``None`` (each graph searches for itself) when ``search`` resolves to the approximate
    search: that one refines a number of candidates proportional to the depth, so the
    first k1 of a deeper list can hold better neighbours than a k1-deep search finds, and
    the graphs would change.
    """
    n = int(x.shape[0])
    if resolve_search(search, n) != "exact":
        return None
    depth = min(n, max(int(deepest_k1), _gap_depth(n, GAP_NEIGHBOURS)))
    return search_neighbours(x, inv_norm, depth, search=search)  # type: ignore[arg-type]


def _first(lists: Lists | None, k: int) -> Lists | None:
    """``lists`` when their first ``k`` columns are exactly what a k-deep search gives,
    else ``None`` (the caller then searches for itself).

    A deeper list settles a tie across the k-th place by index, but faiss's flat index
    (the k-deep search of float32 features on the CPU when faiss is installed) keeps a
    tied member of its own choosing: a row whose k-th and (k+1)-th similarities are
    equal (duplicate samples; rare) leaves the search to the k-deep one, as before.
    """
    if lists is None or k >= lists[1].shape[1]:
        return lists
    sims = lists[1]
    return None if bool((sims[:, k - 1] == sims[:, k]).any()) else lists


def _plain_graph(
    x: torch.Tensor, k1: int, cutoff: float, search: str, lists: Lists | None
) -> sparse.csr_matrix:
    """The plain Jaccard graph at ``k1`` (k2 from :func:`k2_for`) cut at ``cutoff``; its
    neighbours: the first k1 of the shared kNN ``lists``, or its own ``search`` without
    them."""
    return jaccard_distance(x, k1, k2_for(k1), cutoff=cutoff, search=search,  # type: ignore[arg-type]
                            neighbours=lists)


def _camera_graph(x: torch.Tensor, camera: CameraJaccard, cutoff: float) -> sparse.csr_matrix:
    """The camera-aware Jaccard graph of ``camera``'s ids and widths, cut at ``cutoff``."""
    return ca_jaccard_distance(x, camera.camids, k1_intra=camera.k1_intra,
                               k1_inter=camera.k1_inter, k2_intra=camera.k2_intra,
                               k2_inter=camera.k2_inter, cutoff=cutoff)


def _count_peak(
    dist: sparse.csr_matrix, radii: list[float], cores: list[int]
) -> tuple[float, int, int, int, int, np.ndarray]:
    """On the Jaccard graph ``dist`` (cut at ``radii[-1]`` or farther), the (eps,
    min_samples) with the most clusters, then the fewest outliers, then the smaller eps
    and min_samples. Returns ``(eps, min_samples, clusters, outliers, tried, labels
    (N,))``: the labels are :func:`unreid.cluster.dbscan`'s at the chosen pair, which a
    graph cut at that eps gives too (DBSCAN reads only the pairs within eps)."""
    best: tuple | None = None
    tried = 0
    with warnings.catch_warnings():  # "all samples are outliers" is an expected candidate
        warnings.simplefilter("ignore", UserWarning)
        for eps in radii:
            for ms in cores:
                tried += 1
                labels = dbscan(dist, eps, min_samples=ms)
                clusters = int(labels.max(initial=-1)) + 1
                outliers = int((labels < 0).sum())
                key = (-clusters, outliers, eps, ms)
                if best is None or key < best[0]:
                    best = (key, eps, ms, clusters, outliers, labels)
    assert best is not None
    _, eps, ms, clusters, outliers, labels = best
    return eps, ms, clusters, outliers, tried, labels


@dataclass(frozen=True)
class AutoChoice:
    """The chosen knobs, why, and the labels they give.

    Attributes:
        k1, k2: the plain Jaccard graph's neighbourhood sizes. With ``jaccard`` ``plain``
            those of the chosen graph; with ``camera_aware`` the graph reads the camera
            widths instead and these are the camera-blind rule's (from the similarity gap,
            no graph built), for plain graphs a caller builds besides (SFE-CR's
            per-camera local clusters).
        eps, min_samples: the DBSCAN settings to cluster with.
        num_clusters, outlier_share: what they give on the features they were chosen on.
        images_per_cluster: clustered samples / clusters (an estimate of images per
            identity at the chosen granularity).
        candidates: (eps, min_samples) settings tried, over every graph built.
        images_per_id, gap_clarity: the similarity-gap estimate and how clear the gap is
            (:func:`similarity_gap`).
        reason: one line for the log, e.g. ``"~2 images per identity (similarity gap 1.8,
            vague), k1 5 of 5 graphs: most camera-balanced clusters (23); most clusters
            (152, 36 % outliers) of 45 candidates"``.
        jaccard: the graph the knobs were chosen on: ``plain`` (k-reciprocal Jaccard at
            k1, k2) or ``camera_aware`` (CA-Jaccard at ``camera_widths``).
        camera_widths: ``(k1_intra, k1_inter, k2_intra, k2_inter)`` of the camera-aware
            graph, ``None`` for the plain one (a list in :meth:`as_dict`).
        labels: (N,) int64 DBSCAN labels at the chosen knobs on the chosen graph, numbered
            as :func:`unreid.cluster.jaccard_dbscan` numbers them: exactly what
            ``jaccard_dbscan(features, **choice.params(), camera=...)`` gives with the same
            camera (or none) and search, so a caller need not build the graph again. Not
            compared by ``==`` nor part of :meth:`as_dict`.
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
    gap_clarity: float
    reason: str
    jaccard: str
    camera_widths: tuple[int, int, int, int] | None
    labels: np.ndarray = field(compare=False, repr=False)

    def params(self) -> dict[str, float | int]:
        """``{"k1", "k2", "eps", "min_samples"}``: keyword arguments of
        :func:`unreid.cluster.jaccard_dbscan` (which ignores k1 and k2 given a camera)."""
        return {"k1": self.k1, "k2": self.k2, "eps": self.eps, "min_samples": self.min_samples}

    def as_dict(self) -> dict[str, float | int | str | list[int] | None]:
        """Every field but the labels, JSON-able (for the epoch record)."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "labels"}
        if self.camera_widths is not None:
            record["camera_widths"] = list(self.camera_widths)
        return record


def auto_cluster_params(
    features: np.ndarray | torch.Tensor,
    *,
    k1_choices: tuple[int, ...] = K1_CHOICES,
    eps_choices: tuple[float, ...] | None = None,
    min_samples_choices: tuple[int, ...] = MIN_SAMPLES_CHOICES,
    min_k1: int = MIN_K1,
    search: str = "auto",
    camids: np.ndarray | None = None,
    camera: CameraJaccard | None = None,
) -> AutoChoice:
    """Choose k1, k2, eps and min_samples for :func:`unreid.cluster.jaccard_dbscan` on
    ``features``: one Jaccard graph, the (eps, min_samples) with the most clusters on it
    (see the module docstring), and the labels they give there.

    Args:
        features: (N, D) float features, N >= 2 (L2-normalised inside).
        k1_choices: neighbourhood sizes; the smallest that is at least the images per
            identity (and at least ``min_k1`` unless the similarity gap is clear) is used
            (the largest when none is), capped at N.
        eps_choices: DBSCAN radii tried, each in (0, 1]; ``None``: :data:`EPS_CHOICES` on
            the plain graph, :data:`CA_EPS_CHOICES` on the camera-aware one.
        min_samples_choices: DBSCAN core sizes tried, each >= 2 (those above the
            images-per-identity estimate are skipped).
        min_k1: the smallest k1 used when the similarity gap is vague (:data:`MIN_K1`;
            at most N / :data:`SMALL_SET_SHARE`).
        search: the Jaccard graph's neighbour search (``cluster.knn``: auto, exact, faiss;
            see :func:`unreid.cluster.jaccard_distance`); the camera-aware graph always
            ranks exactly.
        camids: (N,) camera of each sample, or ``None`` when unknown. With two or more
            cameras (and no ``camera``), k1 is the choice whose count peak holds the most
            camera-balanced clusters (:func:`balanced_clusters`; one graph per k1 choice,
            ties to more clusters, then the smaller k1), the rule above when no graph has
            one. With ``camera`` it must be ``None`` or ``camera.camids``.
        camera: ``None`` for the plain Jaccard graph(s) above. Else the one graph is the
            camera-aware Jaccard distance of ``camera``'s ids and widths
            (:func:`unreid.cluster.ca_jaccard_distance`): the k1 choices do not apply to
            it (no graph per k1, no camera-balanced count; the returned k1 and k2 are the
            camera-blind rule's, for plain graphs a caller builds besides), and eps and
            min_samples are chosen on it by the same count peak, from
            :data:`CA_EPS_CHOICES` unless ``eps_choices`` is given.

    One neighbour search serves everything on the plain path: the similarity gap and every
    graph read the first columns of the same kNN lists, exactly their own searches'
    answers (a graph whose k1-th place is tied in some row, as duplicate samples make it,
    searches for itself: see :func:`_first`). Not with the approximate search
    (``search="faiss"``, or ``"auto"`` from :data:`unreid.cluster.knn.APPROX_FROM` samples
    on), whose answer depends on the depth: then each graph searches for itself, and the
    gap exactly. The camera-aware graph ranks per camera on its own; the gap then searches
    for itself.

    Returns an :class:`AutoChoice`, whose ``labels`` are ``jaccard_dbscan``'s at the
    chosen knobs. Raises :class:`ClusteringError` for fewer than 2 samples, bad features
    (see :func:`unreid.cluster.knn`), camera ids of another length (or other than
    ``camera``'s), or empty/out-of-range choices.
    """
    n = int(features.shape[0])
    if n < 2:
        raise ClusteringError(f"auto_cluster_params: need at least 2 samples, got {n}")
    if eps_choices is None:
        eps_choices = EPS_CHOICES if camera is None else CA_EPS_CHOICES
    if not k1_choices or not eps_choices or not min_samples_choices:
        raise ClusteringError("auto_cluster_params: every choice list needs a value")
    if not all(0.0 < float(e) <= 1.0 for e in eps_choices):
        raise ClusteringError(f"auto_cluster_params: eps choices {eps_choices} must lie in (0, 1]")
    if min(min_samples_choices) < 2 or min(k1_choices) < 1:
        raise ClusteringError("auto_cluster_params: min_samples choices must be >= 2, k1 >= 1")
    x, inv_norm = as_features(features, who="auto_cluster_params")
    cams = None if camids is None else np.asarray(camids).reshape(-1)
    if cams is not None and cams.shape[0] != n:
        raise ClusteringError(f"auto_cluster_params: {cams.shape[0]} camera ids for {n} samples")
    if camera is not None:
        if cams is not None and not np.array_equal(cams, np.asarray(camera.camids).reshape(-1)):
            raise ClusteringError("auto_cluster_params: camids differ from camera.camids; "
                                  "pass the camera ids once (camera alone)")
        cams = None  # no camera-balanced k1 choice: the camera-aware graph is the only one
    lists = None if camera is not None else (
        _shared_neighbours(x, inv_norm, max(int(k) for k in k1_choices), search))
    per_id, clarity = similarity_gap(x, neighbours=_first(lists, _gap_depth(n, GAP_NEIGHBOURS)))
    cores = sorted({int(m) for m in min_samples_choices if m <= max(2, per_id)}) \
        or [min(int(m) for m in min_samples_choices)]
    radii = sorted({float(e) for e in eps_choices})
    gap = "clear" if clarity >= CLEAR_GAP else "vague"
    # Without cameras: k1 at least the images of one person (a smaller k-reciprocal set
    # splits people into fragments that only differ in which of them they hold). When the
    # gap is vague the estimate says 2-3 whatever the truth, and below min_k1 the count
    # peak sits on near-duplicate fragments: then k1 is at least min_k1, but at most a
    # twentieth of the samples (on a tiny set such a neighbourhood is many people).
    # min_samples at most one person's images.
    vague_floor = min(int(min_k1), n // SMALL_SET_SHARE)
    floor = per_id if clarity >= CLEAR_GAP else max(vague_floor, per_id)
    k1 = min(min((int(k) for k in k1_choices if k >= floor), default=max(k1_choices)), n)
    if camera is not None:
        widths = (int(camera.k1_intra), int(camera.k1_inter), int(camera.k2_intra),
                  int(camera.k2_inter))
        eps, ms, clusters, outliers, tried, labels = _count_peak(
            _camera_graph(x, camera, radii[-1]), radii, cores)
        why = ("one camera-aware Jaccard graph (k1_intra {}, k1_inter {}, k2_intra {}, "
               "k2_inter {}; the k1 choices do not apply to it, k1 {} is for plain graphs "
               "only)").format(*widths, k1)
    else:
        widths = None
        several = cams is not None and len(np.unique(cams)) >= 2
        # With several cameras: one count peak per k1, and the k1 whose peak holds the most
        # camera-balanced clusters (see the module docstring); none on any graph: the above.
        graphs = sorted({min(int(k), n) for k in k1_choices}) if several else [k1]
        peaks = {k: _count_peak(_plain_graph(x, k, radii[-1], search, _first(lists, k)),
                                radii, cores) for k in graphs}
        balanced = ({k: balanced_clusters(peaks[k][-1], cams) for k in graphs}
                    if cams is not None and several else {})
        why = f"k1 {k1}"
        if several and max(balanced.values()) > 0:
            k1 = max(graphs, key=lambda k: (balanced[k], peaks[k][2], -k))
            why = (f"k1 {k1} of {len(graphs)} graphs: most camera-balanced clusters "
                   f"({balanced[k1]})")
        elif several:
            why = f"k1 {k1} (no camera-balanced cluster on any graph)"
        eps, ms, clusters, outliers, _, labels = peaks[k1]
        tried = sum(peak[4] for peak in peaks.values())
    k2 = k2_for(k1)
    per_cluster = (n - outliers) / clusters if clusters else 0.0
    share = outliers / n
    reason = (f"~{per_id} images per identity (similarity gap {clarity:.1f}, {gap}), {why}; "
              f"most clusters ({clusters}, {100 * share:.0f} % outliers) of {tried} candidates")
    return AutoChoice(k1=k1, k2=k2, eps=eps, min_samples=ms, num_clusters=clusters,
                      outlier_share=share, images_per_cluster=per_cluster, candidates=tried,
                      images_per_id=per_id, gap_clarity=clarity, reason=reason,
                      jaccard="plain" if camera is None else "camera_aware",
                      camera_widths=widths, labels=labels)
