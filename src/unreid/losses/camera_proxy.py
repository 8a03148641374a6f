"""Camera-aware proxies (CAP; Wang et al., AAAI 2021): one proxy per (pseudo-identity, camera).

A cluster of the global clustering usually holds one person seen by several
cameras, and a single centroid per cluster mixes the cameras' looks. CAP splits
every cluster by camera: a *proxy* is the L2-normalised mean of the cluster's
samples from one camera. Two losses train on the proxies:

- :func:`intra_camera_loss`: InfoNCE of a sample against the proxies *of its
  own camera only*. A person's view in another camera is never a negative, so
  this loss cannot push the two views of one person apart; what it learns is
  to tell people apart under one camera's background and light.
- :func:`inter_camera_loss`: the sample against all proxies of its
  pseudo-identity (soft target ``1 / |P|`` each) and the ``hard_negatives``
  most similar proxies of other identities. This pulls the views of one
  pseudo-identity together, and extra positives (from an online cross-camera
  association, :func:`unreid.cluster.associate_proxies`) can join ``P``.

Both losses are the mean over the batch's samples of one camera, summed over
the cameras present in the batch, as the official code (``CAPMemory``) sums its
per-camera terms. Defaults follow that code: temperature 0.07 for both losses,
50 hard negatives, inter-camera weight 0.5 switched on from epoch 5, momentum
0.2 (the proxies' update is :meth:`ClusterMemory.update`, the same per-sample
rule). The official code counts the sample's own-camera proxy of its identity
among the positives of the inter-camera loss; ``own_camera_positive=False``
keeps only the other cameras' proxies (then a pseudo-identity seen by one
camera adds no inter-camera term).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unreid.losses.memory import ClusterMemory

__all__ = [
    "CameraProxies",
    "ProxyMemory",
    "camera_proxies",
    "inter_camera_loss",
    "intra_camera_loss",
]


@dataclass(frozen=True)
class CameraProxies:
    """The proxies of one epoch's labels.

    Attributes:
        features: (P, D) float32, L2-normalised mean of each proxy's normalised features.
        labels: (P,) int64 pseudo-identity of each proxy.
        cameras: (P,) int64 camera of each proxy.
        index: (N,) int64 proxy of every sample, ``-1`` for outliers (label ``-1``).
    """

    features: torch.Tensor
    labels: np.ndarray
    cameras: np.ndarray
    index: np.ndarray

    @property
    def num_proxies(self) -> int:
        return len(self.labels)


def camera_proxies(
    features: torch.Tensor, labels: np.ndarray, camids: np.ndarray
) -> CameraProxies:
    """Split every pseudo-identity by camera: proxy = normalised mean of its camera's samples.

    Proxies are ordered by (label, camera), so the result depends on the labels
    and cameras only, not on the sample order.

    Args:
        features: (N, D) float features (normalised here).
        labels: (N,) int pseudo-identities, ``-1`` = outlier (no proxy).
        camids: (N,) int camera of each sample.

    Returns:
        :class:`CameraProxies` with P = number of distinct (label, camera) pairs
        among the non-outliers.
    """
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    cam = np.asarray(camids, dtype=np.int64).reshape(-1)
    if not len(lab) == len(cam) == features.shape[0]:
        raise ValueError(
            f"camera_proxies: {features.shape[0]} features, {len(lab)} labels and {len(cam)} "
            "camera ids must have the same length"
        )
    keep = np.flatnonzero(lab >= 0)
    pairs, inverse = np.unique(np.stack([lab[keep], cam[keep]], axis=1), axis=0,
                               return_inverse=True)
    index = np.full(len(lab), -1, dtype=np.int64)
    index[keep] = inverse.reshape(-1)
    memory = ClusterMemory(features.shape[1], max(len(pairs), 1))
    if len(pairs):
        memory.init_centroids(features.detach().float().cpu(), index)
    return CameraProxies(
        features=memory.centroids[: len(pairs)].clone(),
        labels=pairs[:, 0].copy() if len(pairs) else np.empty(0, dtype=np.int64),
        cameras=pairs[:, 1].copy() if len(pairs) else np.empty(0, dtype=np.int64),
        index=index,
    )


def _sum_of_camera_means(values: torch.Tensor, cams: torch.Tensor,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the cameras in ``cams`` of the mean of ``values`` over that camera's samples.

    ``weight`` (B,) bool: which samples count (the others are left out of both the
    sum and the camera's sample count; a camera without counted samples adds 0).
    """
    counted = torch.ones_like(values, dtype=torch.bool) if weight is None else weight
    _, slot = torch.unique(cams, return_inverse=True)
    num = int(slot.max()) + 1 if slot.numel() else 0
    sums = torch.zeros(num, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, slot, torch.where(counted, values, torch.zeros_like(values)))
    counts = torch.bincount(slot[counted], minlength=num).to(values.dtype)
    return (sums / counts.clamp(min=1)).sum()


def intra_camera_loss(
    feats: torch.Tensor,
    proxy_index: torch.Tensor,
    proxies: torch.Tensor,
    proxy_cams: torch.Tensor,
    *,
    temperature: float = 0.07,
) -> torch.Tensor:
    """InfoNCE against the proxies of the sample's own camera (CAP's intra-camera loss).

    Args:
        feats: (B, D) features (normalised here).
        proxy_index: (B,) int64 proxy of each sample (no outliers).
        proxies: (P, D) unit proxy features (not trained: a memory).
        proxy_cams: (P,) int64 camera of each proxy.
        temperature: softmax temperature (CAP: 0.07).

    Returns:
        scalar: per camera, the mean over its samples of ``-log softmax(f . c / T)`` at
        the sample's proxy with the softmax over that camera's proxies only; summed
        over the cameras of the batch.
    """
    feats = F.normalize(feats, dim=1)
    logits = feats @ proxies.t().to(feats.dtype) / temperature
    cams = proxy_cams[proxy_index]
    other_camera = proxy_cams[None, :] != cams[:, None]
    logits = logits.float().masked_fill(other_camera, float("-inf"))
    nll = F.cross_entropy(logits, proxy_index, reduction="none")
    return _sum_of_camera_means(nll, cams)


def inter_camera_loss(
    feats: torch.Tensor,
    proxy_index: torch.Tensor,
    proxies: torch.Tensor,
    proxy_labels: torch.Tensor,
    proxy_cams: torch.Tensor,
    *,
    temperature: float = 0.07,
    hard_negatives: int = 50,
    own_camera_positive: bool = True,
    extra_positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-target contrast of a sample's identity proxies against hard other proxies.

    For sample i with proxy q (label y, camera c): positives P = proxies labelled y
    (without q when ``own_camera_positive`` is False) plus ``extra_positives[i]``;
    negatives N = the ``hard_negatives`` proxies outside P most similar to f_i (any
    camera; ties by lower index). Loss_i = ``-sum_{p in P} log softmax_{P u N}(f . c /
    T)_p / |P|``. Samples with an empty P are left out.

    Args:
        feats: (B, D) features (normalised here).
        proxy_index: (B,) int64 proxy of each sample.
        proxies: (P, D) unit proxies; proxy_labels, proxy_cams: (P,) int64.
        temperature: softmax temperature (CAP: 0.07).
        hard_negatives: |N| (CAP: 50); fewer when fewer proxies are left.
        own_camera_positive: count the own camera's identity proxy as a positive
            (the official code does).
        extra_positives: (B, P) bool, more positives per sample (cross-camera links).

    Returns:
        scalar: per camera, the mean of Loss_i over its samples with a positive;
        summed over cameras (0 when no sample has a positive).
    """
    feats = F.normalize(feats, dim=1)
    sims = (feats @ proxies.t().to(feats.dtype)).float()
    positive = proxy_labels[None, :] == proxy_labels[proxy_index][:, None]
    if not own_camera_positive:
        positive &= proxy_cams[None, :] != proxy_cams[proxy_index][:, None]
    if extra_positives is not None:
        positive |= extra_positives.to(positive.device)
    num_neg = min(int(hard_negatives), proxies.shape[0])
    # Positives sink below every real similarity (cosines lie in [-1, 1]), so top-k picks
    # negatives first; a picked positive (fewer negatives than k) is dropped by the mask.
    candidates = sims.masked_fill(positive, -3.0)
    neg_sims, neg_idx = torch.topk(candidates, num_neg, dim=1, sorted=True) if num_neg else (
        sims[:, :0], torch.zeros(sims.shape[0], 0, dtype=torch.long, device=sims.device))
    neg_ok = ~torch.gather(positive, 1, neg_idx)
    # logsumexp over P u N, then the mean of -log p over P
    logits = sims / temperature
    pos_logits = logits.masked_fill(~positive, float("-inf"))
    neg_logits = (neg_sims / temperature).masked_fill(~neg_ok, float("-inf"))
    log_z = torch.logsumexp(torch.cat([pos_logits, neg_logits], dim=1), dim=1)
    num_pos = positive.sum(dim=1)
    has_pos = num_pos > 0
    pos_sum = torch.where(positive, logits, torch.zeros_like(logits)).sum(dim=1)
    loss = torch.where(has_pos, log_z - pos_sum / num_pos.clamp(min=1), torch.zeros_like(log_z))
    return _sum_of_camera_means(loss, proxy_cams[proxy_index], has_pos)


class ProxyMemory(ClusterMemory):
    """A :class:`ClusterMemory` whose centroids are camera proxies, with CAP's two losses.

    Buffers: ``centroids`` (P, D) the proxies, ``proxy_labels`` and ``proxy_cams`` (P,).
    :meth:`forward` returns the intra- and inter-camera terms; the momentum update
    is the parent's (per sample, in batch order).

    Args:
        num_features: D.
        proxy_labels, proxy_cams: (P,) int pseudo-identity and camera of each proxy.
        temperature: of both losses (CAP: 0.07).
        momentum: weight of the old proxy in the update (CAP: 0.2).
        hard_negatives, own_camera_positive: see :func:`inter_camera_loss`.
    """

    proxy_labels: torch.Tensor
    proxy_cams: torch.Tensor

    def __init__(
        self,
        num_features: int,
        proxy_labels: np.ndarray | torch.Tensor,
        proxy_cams: np.ndarray | torch.Tensor,
        *,
        temperature: float = 0.07,
        momentum: float = 0.2,
        hard_negatives: int = 50,
        own_camera_positive: bool = True,
    ) -> None:
        labels = torch.as_tensor(np.asarray(proxy_labels), dtype=torch.int64).reshape(-1)
        cams = torch.as_tensor(np.asarray(proxy_cams), dtype=torch.int64).reshape(-1)
        if labels.shape != cams.shape:
            raise ValueError(f"{labels.numel()} proxy labels but {cams.numel()} proxy cameras")
        super().__init__(num_features, labels.numel(), temperature=temperature,
                         momentum=momentum)
        self.hard_negatives = int(hard_negatives)
        self.own_camera_positive = bool(own_camera_positive)
        self.register_buffer("proxy_labels", labels)
        self.register_buffer("proxy_cams", cams)

    @classmethod
    def from_proxies(cls, proxies: CameraProxies, **kwargs) -> ProxyMemory:
        """A memory holding ``proxies`` (their features copied in)."""
        memory = cls(proxies.features.shape[1], proxies.labels, proxies.cameras, **kwargs)
        memory.centroids = proxies.features.clone().float()
        return memory

    def losses(
        self,
        feats: torch.Tensor,
        proxy_index: torch.Tensor,
        *,
        inter: bool,
        extra_positives: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"intra": ..., "inter": ...}`` (``inter`` only when asked) with the current proxies."""
        out = {"intra": intra_camera_loss(feats, proxy_index, self.centroids, self.proxy_cams,
                                          temperature=self.temperature)}
        if inter:
            out["inter"] = inter_camera_loss(
                feats, proxy_index, self.centroids, self.proxy_labels, self.proxy_cams,
                temperature=self.temperature, hard_negatives=self.hard_negatives,
                own_camera_positive=self.own_camera_positive, extra_positives=extra_positives,
            )
        return out

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", hard_negatives={self.hard_negatives}, "
                f"own_camera_positive={self.own_camera_positive}")
