"""Camera-aware learning: cluster-contrast labels trained on camera proxies (CAP), with
optional online cross-camera association, CA-Jaccard and per-camera standardisation.

Each part is a switch, so the ablation can isolate it:

- labels: Jaccard + DBSCAN as cluster-contrast (``cluster.k1``, ``k2``, ``eps``,
  ``min_samples``, or chosen from the features with ``cluster.auto``); with
  ``cluster.jaccard=camera_aware`` the camera-aware Jaccard distance
  (:func:`unreid.cluster.ca_jaccard_distance`, ``camera.k1_intra``, ``k1_inter``,
  ``k2_intra``, ``k2_inter``; in the first epoch ``k2`` is 3/3 as in the official
  CA-Jaccard code's warm-up), on which ``cluster.auto`` then chooses; with
  ``camera.standardize=true`` the features are standardised per camera
  (:func:`unreid.cluster.standardize_per_camera`) before clustering and before the
  choice (the proxies and the training still use the features as extracted).
- head: with ``camera.proxies=true`` (default) a :class:`ProxyMemory` of one proxy per
  (cluster, camera), rebuilt each epoch from the per-camera means; the loss is the
  intra-camera term plus, from epoch ``camera.inter_start_epoch`` (0-based),
  ``camera.inter_weight`` x the inter-camera term. With ``camera.proxies=false`` the
  head is cluster-contrast's memory (``method.temperature``, ``method.momentum``), so
  the label options can be measured alone.
- batches: ``camera.proxy_sampler=true`` draws P proxies x K images
  (``optim.num_identities`` x ``optim.num_instances``), CAP's proxy-balanced sampling;
  false draws P pseudo-identities.
- association (``camera.associate=true``, needs proxies): per batch, each sample's
  nearest proxy in every other camera that passes the gate
  (``camera.assoc_mutual``, ``camera.assoc_min_similarity``, ``camera.assoc_margin``;
  see :func:`unreid.cluster.associate_proxies`) is an extra positive of the
  inter-camera term (so it acts from ``inter_start_epoch`` on). The similarity
  threshold moves by ``camera.assoc_similarity_step`` per epoch after
  ``inter_start_epoch`` (:func:`association_threshold`): a positive step tightens the
  gate, a negative one loosens it.

Defaults are CAP's official code (temperature 0.07, momentum 0.2, 50 hard
negatives, weight 0.5 from epoch 5, own-camera proxy among the positives, P x K
proxy batches; each loss term is the mean over a camera's samples in the batch,
summed over cameras). CAP clusters with the same k-reciprocal Jaccard + DBSCAN
procedure; here it runs with ``cluster.*`` like every other method. Deviations: the
association takes each other camera's nearest proxy behind a gate instead of
O2CAP's top-3 (see :mod:`unreid.cluster.association`), and the benches start the
inter-camera term after epoch 1 (``camera.inter_start_epoch=1``) because their
budget is 4 epochs, where CAP's epoch 5 would never come.

Logged in ``PseudoLabels.info``: ``auto`` (with ``cluster.auto``: the chosen knobs and
why), ``num_proxies``, ``proxies_per_cluster``, and with
association ``association_links`` (links the gate makes on the epoch's features
against the new proxies) and ``online_links`` (links made in the batches of the
previous epoch). When the trainer knows the true identities it calls
:meth:`CAP.label_diagnostics`, which adds the links' precision (share of links whose
sample has the proxy's majority identity).

Under DistributedDataParallel the online association counts each rank's own batches
only; the positives are per sample and need no communication.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unreid.cluster import (
    CrossCameraLinks,
    associate_proxies,
    link_precision,
    standardize_per_camera,
)
from unreid.config import CameraConfig, Config
from unreid.data.sampler import ProxySampler
from unreid.errors import ConfigError
from unreid.losses import ProxyMemory, camera_proxies
from unreid.methods.base import Gather, LabelInputs, PseudoLabels, identity_gather
from unreid.methods.common import JACCARD_KINDS, camera_ids, density_labels, require_clusters
from unreid.methods.heads import MemoryMethod
from unreid.methods.registry import register_method
from unreid.models import ReIDModel

__all__ = ["CAP", "JACCARD_KINDS", "association_threshold", "camera_aware_labels"]


def camera_aware_labels(
    features: torch.Tensor, camids: np.ndarray, cfg: Config, epoch: int
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Jaccard (plain or camera-aware) + DBSCAN labels of the (optionally per-camera
    standardised) features: :func:`unreid.methods.common.density_labels` of them.

    Args:
        features: (N, D) features of the training images.
        camids: (N,) int camera of each image (zeros without cameras).
        cfg: reads ``cluster`` (auto, k1, k2, eps, min_samples, knn, jaccard) and
            ``camera`` (standardize, and the CA-Jaccard widths:
            :func:`unreid.methods.common.camera_jaccard`).
        epoch: 0-based; epoch 0 uses the warm-up k2 of CA-Jaccard.

    Returns ``(labels (N,) int64 dense with -1 = outlier, the knobs, info)`` as
    ``density_labels``; with ``camera.standardize`` the ``cluster.auto`` choice is made
    on the standardised features, the ones clustered.
    """
    if bool(cfg.camera.standardize):
        features = standardize_per_camera(features, camids)
    return density_labels(cfg, features, camids, epoch)


def association_threshold(cam: CameraConfig, epoch: int) -> float | None:
    """The association's cosine threshold in ``epoch`` (0-based), or None for no threshold.

    ``camera.assoc_min_similarity`` up to ``camera.inter_start_epoch``, then
    ``camera.assoc_similarity_step`` more per epoch, clipped to [-1, 1]; -1 means none.
    """
    steps = max(0, int(epoch) - int(cam.inter_start_epoch))
    value = float(cam.assoc_min_similarity) + float(cam.assoc_similarity_step) * steps
    value = min(1.0, max(-1.0, value))
    return None if value <= -1.0 else value


class _CameraLabels(PseudoLabels):
    """The epoch's labels plus what the head needs on every rank (the object is
    broadcast whole): ``camids`` (N,) int64 and the 0-based ``epoch``."""

    def __init__(self, labels: np.ndarray, num_classes: int, camids: np.ndarray, epoch: int,
                 info: dict[str, Any]) -> None:
        super().__init__(labels, num_classes, info=info)
        self.camids = np.asarray(camids, dtype=np.int64)
        self.epoch = int(epoch)


@register_method("cap")
class CAP(MemoryMethod):
    """Cluster-contrast labels, camera-proxy losses, optional association (module doc)."""

    uses_cameras = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        cam = cfg.camera
        if str(cfg.cluster.jaccard) not in JACCARD_KINDS:
            raise ConfigError(f"cluster.jaccard={cfg.cluster.jaccard!r} is unknown: use one "
                              f"of {', '.join(JACCARD_KINDS)}")
        if bool(cam.associate) and not bool(cam.proxies):
            raise ConfigError("camera.associate=true needs camera.proxies=true (the links "
                              "are to camera proxies)")
        self.proxies_on = bool(cam.proxies)
        self._epoch = 0
        self._sample_proxy: torch.Tensor | None = None  # (N,) int64 on the device
        self._sample_proxy_np: np.ndarray | None = None
        # Online links of the running epoch: (dataset index, proxy) per batch.
        self._online: list[tuple[np.ndarray, np.ndarray]] = []
        # What label_diagnostics scores (set by make_labels on rank 0).
        self._diagnose: dict[str, Any] = {}

    # ------------------------------------------------------------ labels

    def make_labels(self, inputs: LabelInputs) -> PseudoLabels:
        camids = camera_ids(inputs)
        features = inputs.require_features()
        labels, params, info = camera_aware_labels(features, camids, self.cfg, inputs.epoch)
        num = require_clusters(labels, inputs.epoch, knob="cluster.eps", value=params["eps"])
        diagnose: dict[str, Any] = {}
        if self.proxies_on:
            proxies = camera_proxies(features, labels, camids)
            info["num_proxies"] = proxies.num_proxies
            info["proxies_per_cluster"] = proxies.num_proxies / num
            if bool(self.cfg.camera.associate):
                keep = np.flatnonzero(proxies.index >= 0)
                links = self._associate(features[torch.from_numpy(keep)],
                                        proxies.index[keep], proxies.features,
                                        proxies.labels, proxies.cameras, inputs.epoch)
                info["association_links"] = len(links)
                diagnose["association"] = (keep[links.sample], links.proxy, proxies.index)
                if self._sample_proxy_np is not None:  # the previous epoch's online links
                    idx, prox = self._online_links()
                    info["online_links"] = len(idx)
                    diagnose["online"] = (idx, prox, self._sample_proxy_np)
        self._diagnose = diagnose
        return _CameraLabels(labels, num, camids, inputs.epoch, info)

    def _associate(self, feats, own, proxies, labels, cams, epoch: int):
        cam = self.cfg.camera
        margin = float(cam.assoc_margin)
        return associate_proxies(
            feats, own, proxies, labels, cams, mutual=bool(cam.assoc_mutual),
            min_similarity=association_threshold(cam, epoch),
            min_margin=margin if margin > 0 else None,
        )

    def _online_links(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._online:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return (np.concatenate([a for a, _ in self._online]),
                np.concatenate([b for _, b in self._online]))

    def label_diagnostics(self, true_pids: np.ndarray) -> dict[str, float]:
        """Precision of this label round's association links (and of the previous
        epoch's online links) against the true identities; {} without association."""
        out: dict[str, float] = {}
        pids = np.asarray(true_pids, dtype=np.int64)
        for name, (samples, proxies, proxy_index) in self._diagnose.items():
            links = CrossCameraLinks(samples, proxies, np.zeros(len(samples), np.float32))
            out[f"{name}_link_precision"] = link_precision(links, pids, proxy_index, pids)
        return out

    # ------------------------------------------------------------ head

    def build_head(
        self, model: ReIDModel, labels: PseudoLabels, features: torch.Tensor | None
    ) -> None:
        if not self.proxies_on:
            super().build_head(model, labels, features)
            return
        cam = self.cfg.camera
        device = next(model.parameters()).device
        self._device = device
        if features is None:  # resuming: load_state_dict rebuilds the memory from the state
            self.head = None
            return
        if not isinstance(labels, _CameraLabels):
            raise TypeError("cap: build_head needs the labels made by CAP.make_labels")
        camids = labels.camids
        proxies = camera_proxies(features.detach().float().cpu(), labels.labels, camids)
        self.head = ProxyMemory.from_proxies(
            proxies, temperature=cam.temperature, momentum=cam.momentum,
            hard_negatives=cam.hard_negatives, own_camera_positive=cam.own_camera_positive,
        ).to(device)
        self._set_sample_proxy(proxies.index)
        self._epoch = labels.epoch
        self._online = []

    def _set_sample_proxy(self, index: np.ndarray) -> None:
        self._sample_proxy_np = np.asarray(index, dtype=np.int64)
        self._sample_proxy = torch.from_numpy(self._sample_proxy_np).to(self._device)

    def sampler(self, labels: PseudoLabels, *, seed: int, rank: int = 0, world_size: int = 1):
        if not (self.proxies_on and bool(self.cfg.camera.proxy_sampler)):
            return super().sampler(labels, seed=seed, rank=rank, world_size=world_size)
        assert self._sample_proxy_np is not None, "build_head first"
        return ProxySampler(
            self._sample_proxy_np, self.cfg.optim.num_identities, self.cfg.optim.num_instances,
            seed=seed, rank=rank, world_size=world_size,
        )

    # ------------------------------------------------------------ step

    def loss(
        self, out, index: torch.Tensor, gather: Gather = identity_gather
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        if not self.proxies_on:
            return super().loss(out, index, gather)
        assert isinstance(self.head, ProxyMemory) and self._sample_proxy is not None
        cam = self.cfg.camera
        feats = out.feat_norm
        own = self._sample_proxy[index]
        inter = self._epoch >= int(cam.inter_start_epoch) and float(cam.inter_weight) > 0
        extra = None
        if inter and bool(cam.associate):
            head = self.head
            links = self._associate(feats.detach(), own, head.centroids, head.proxy_labels,
                                    head.proxy_cams, self._epoch)
            extra = links.mask(feats.shape[0], head.num_clusters).to(feats.device)
            self._online.append((index.cpu().numpy()[links.sample], links.proxy))
        terms = self.head.losses(feats, own, inter=inter, extra_positives=extra)
        # Every rank updates its copy with all ranks' samples, in rank order (as MemoryMethod).
        self.head.update(gather(feats.detach()), gather(own))
        result = {"intra": terms["intra"]}
        if inter:
            result["inter"] = float(cam.inter_weight) * terms["inter"]
        return result

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.proxies_on and self._sample_proxy_np is not None:
            state["sample_proxy"] = torch.from_numpy(self._sample_proxy_np.copy())
            state["epoch"] = self._epoch
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.proxies_on:
            super().load_state_dict(state)
            return
        cam = self.cfg.camera
        head = state["head"]
        self.head = ProxyMemory(
            head["centroids"].shape[1], head["proxy_labels"].numpy(),
            head["proxy_cams"].numpy(), temperature=cam.temperature, momentum=cam.momentum,
            hard_negatives=cam.hard_negatives, own_camera_positive=cam.own_camera_positive,
        ).to(self._device)
        self.head.load_state_dict(head)
        self._set_sample_proxy(state["sample_proxy"].numpy())
        self._epoch = int(state["epoch"])
