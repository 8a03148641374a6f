"""cluster stage of the unreid pipeline: pure functions on arrays/tensors that turn
features into pseudo-labels (no models, no files)."""

from .camera import reallocate_camera_clusters
from .dbscan import dbscan
from .jaccard import jaccard_distance, rerank
from .kmeans import kmeans
from .knn import knn
from .quality import label_quality
from .selection import pul_select, reliable_soft_labels

__all__ = [
    "dbscan",
    "jaccard_distance",
    "kmeans",
    "knn",
    "label_quality",
    "pul_select",
    "reallocate_camera_clusters",
    "reliable_soft_labels",
    "rerank",
]
