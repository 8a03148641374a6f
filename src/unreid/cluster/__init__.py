"""cluster stage of the unreid pipeline."""

from .camera import reallocate_camera_clusters
from .kmeans import kmeans
from .quality import label_quality
from .selection import pul_select, reliable_soft_labels

__all__ = [
    "kmeans",
    "label_quality",
    "pul_select",
    "reallocate_camera_clusters",
    "reliable_soft_labels",
]
