"""Losses: the cluster-contrast memory (InfoNCE over centroids), camera-aware proxy
losses, and classification losses."""

from unreid.losses.camera_proxy import (
    CameraProxies,
    ProxyMemory,
    camera_proxies,
    inter_camera_loss,
    intra_camera_loss,
)
from unreid.losses.classification import cross_entropy_smooth, soft_cross_entropy
from unreid.losses.memory import ClusterMemory

__all__ = [
    "CameraProxies",
    "ClusterMemory",
    "ProxyMemory",
    "camera_proxies",
    "cross_entropy_smooth",
    "inter_camera_loss",
    "intra_camera_loss",
    "soft_cross_entropy",
]
