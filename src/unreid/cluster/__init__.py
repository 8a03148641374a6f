"""cluster stage of the unreid pipeline: pure functions that turn features into pseudo-labels.

What belongs here: functions of arrays, tensors and plain numbers only (features,
labels, camera ids, k, eps, a seed), returning arrays and numbers. No config
objects, no models, no files, no notion of epochs or training; invalid input
raises :class:`unreid.errors.ClusteringError`. Each is tested exactly in
``tests/test_cluster_*.py`` on small hand-made cases (plus properties on random
ones), without building a method.

What does not: deciding *when* and *with what* these run (which config knobs,
which features, which seed for which epoch, what to do when nothing clusters)
is composition and lives in :mod:`unreid.methods`.

Modules: ``knn``, ``jaccard`` and ``ca_jaccard`` (k-reciprocal distances, plain and
camera-aware), ``association`` (cross-camera links of samples to camera proxies), ``dbscan``,
``density`` (Jaccard + DBSCAN in one call, the class-count estimate), ``kmeans``,
``selection`` (RSL's reliable/soft labels, PUL's selection), ``camera``
(per-camera clusters, camera-aware re-allocation, per-camera standardisation),
``labels`` (dense ids, counts, class centres), ``quality`` (label metrics against the
truth), ``auto`` (Jaccard + DBSCAN knobs chosen from the features), ``health``
(label-free checks of an epoch's labels and the warnings they raise).
"""

from .association import CrossCameraLinks, associate_proxies, link_precision
from .auto import AutoChoice, auto_cluster_params
from .ca_jaccard import ca_jaccard_distance
from .camera import camera_local_clusters, reallocate_camera_clusters, standardize_per_camera
from .dbscan import dbscan
from .density import CameraJaccard, estimate_num_classes, jaccard_dbscan, shrink_k
from .health import health_warnings, label_health
from .jaccard import jaccard_distance, rerank
from .kmeans import kmeans
from .knn import knn
from .labels import class_centres, dense_labels, num_clusters
from .quality import cross_camera_nn_share, label_quality
from .selection import pul_select, reliable_soft_labels

__all__ = [
    "AutoChoice",
    "CameraJaccard",
    "CrossCameraLinks",
    "associate_proxies",
    "auto_cluster_params",
    "ca_jaccard_distance",
    "health_warnings",
    "label_health",
    "camera_local_clusters",
    "class_centres",
    "cross_camera_nn_share",
    "dbscan",
    "dense_labels",
    "estimate_num_classes",
    "jaccard_dbscan",
    "jaccard_distance",
    "kmeans",
    "knn",
    "label_quality",
    "link_precision",
    "num_clusters",
    "pul_select",
    "reallocate_camera_clusters",
    "reliable_soft_labels",
    "rerank",
    "shrink_k",
    "standardize_per_camera",
]
