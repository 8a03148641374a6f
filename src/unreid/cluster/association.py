"""Online cross-camera association of samples with camera proxies (after O2CAP).

When the global clustering keeps each camera apart, the proxies of one person
in two cameras carry two different pseudo-identities, and no loss that takes
its positives from the pseudo-labels can link them. The association looks
for those links directly: for a sample of camera a and every other camera b,
the proxy of b most similar to the sample is a candidate; it becomes an extra
positive of that sample when it passes a gate:

- *mutual*: seen from that proxy, the most similar proxy of camera a is the
  sample's own proxy (the two proxies are each other's nearest across the two
  cameras), and/or
- *similarity*: the sample's cosine similarity to the candidate is at least
  ``min_similarity``, and/or
- *margin*: the candidate is more similar to the sample than the runner-up
  proxy of camera b by at least ``min_margin`` (a distinct nearest, not one of
  several look-alikes; a camera with one proxy has no runner-up and passes).

The gates combine with "and". How strict they are over training (a threshold
that tightens or loosens from epoch to epoch) is the caller's schedule (see
:mod:`unreid.methods.cap`).

A sample gets at most one extra positive per other camera, so never more than
the number of other cameras (on two-camera data, one: O2CAP's default of three
online positives would turn hard negatives of the one other camera into
positives). Candidates of the sample's own pseudo-identity are positives
already and are not returned as links.

Deviation from O2CAP: O2CAP takes the top-3 other-camera proxies (with a
similarity threshold) as online positives; the per-camera nearest with a mutual
gate here is stricter and bounded by the camera count, for the reason above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CrossCameraLinks", "associate_proxies", "link_precision"]

# Rows of the (rows x P) similarity blocks computed at once.
_BLOCK_ELEMS = 1 << 22


@dataclass(frozen=True)
class CrossCameraLinks:
    """Links of samples to proxies of other cameras and other pseudo-identities.

    Attributes:
        sample: (L,) int64 row of the sample in the features passed in.
        proxy: (L,) int64 linked proxy.
        similarity: (L,) float32 cosine similarity of the sample to the proxy.
    """

    sample: np.ndarray
    proxy: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return len(self.sample)

    def mask(self, num_samples: int, num_proxies: int) -> torch.Tensor:
        """(num_samples, num_proxies) bool: True at every link."""
        out = torch.zeros(num_samples, num_proxies, dtype=torch.bool)
        out[torch.from_numpy(self.sample), torch.from_numpy(self.proxy)] = True
        return out


def _long(values: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A flat int64 tensor on ``device`` from an array or a tensor (any device)."""
    if torch.is_tensor(values):
        return values.to(device=device, dtype=torch.int64).reshape(-1)
    return torch.as_tensor(np.asarray(values), dtype=torch.int64, device=device).reshape(-1)


def _best_per_camera(sims: torch.Tensor, slot: torch.Tensor, num_cams: int) -> torch.Tensor:
    """(R, C) largest of ``sims`` (R, P) per camera (``slot`` (R, P): each column's
    camera); -inf where a camera has no proxy."""
    best = torch.full((sims.shape[0], num_cams), float("-inf"), dtype=sims.dtype,
                      device=sims.device)
    return best.scatter_reduce(1, slot, sims, reduce="amax", include_self=True)


def _runner_up_per_camera(
    sims: torch.Tensor, proxy_cams: torch.Tensor, num_cams: int, first: torch.Tensor
) -> torch.Tensor:
    """(R, C) similarity of the second most similar proxy of each camera, the nearest
    ``first`` (R, C) (from :func:`_nearest_per_camera`) left out; -inf when the camera
    has fewer than two proxies."""
    slot = proxy_cams[None, :].expand_as(sims)
    rest = sims.clone()
    has = first >= 0
    rows = torch.arange(sims.shape[0], device=sims.device)[:, None].expand_as(first)
    rest[rows[has], first[has]] = float("-inf")
    return _best_per_camera(rest, slot, num_cams)


def _nearest_per_camera(
    sims: torch.Tensor, proxy_cams: torch.Tensor, num_cams: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row and camera, the most similar proxy of that camera (ties: lower index).

    Returns ``(index (R, C) int64, similarity (R, C))``; index -1 where the camera
    has no proxy.
    """
    rows, num_proxies = sims.shape
    slot = proxy_cams[None, :].expand(rows, num_proxies)
    best = _best_per_camera(sims, slot, num_cams)
    is_best = sims == torch.gather(best, 1, slot)
    # Lowest index among the maxima of each camera: scatter the index where it is a maximum.
    idx = torch.arange(num_proxies, device=sims.device).expand(rows, num_proxies)
    big = torch.full_like(idx, num_proxies)
    first = torch.full((rows, num_cams), num_proxies, dtype=torch.int64, device=sims.device)
    first = first.scatter_reduce(1, slot, torch.where(is_best, idx, big), reduce="amin")
    first[first == num_proxies] = -1
    return first, best


def associate_proxies(
    features: torch.Tensor,
    sample_proxy: np.ndarray | torch.Tensor,
    proxies: torch.Tensor,
    proxy_labels: np.ndarray | torch.Tensor,
    proxy_cams: np.ndarray | torch.Tensor,
    *,
    mutual: bool = True,
    min_similarity: float | None = None,
    min_margin: float | None = None,
) -> CrossCameraLinks:
    """Per sample, the nearest proxy in every other camera, kept when it passes the gate.

    Args:
        features: (B, D) sample features (normalised here).
        sample_proxy: (B,) int proxy of each sample (``>= 0``; drop outliers first).
        proxies: (P, D) proxy features (normalised here).
        proxy_labels: (P,) int pseudo-identity of each proxy.
        proxy_cams: (P,) int camera of each proxy (any non-negative ints).
        mutual: require that the candidate's nearest proxy in the sample's camera is
            the sample's own proxy.
        min_similarity: require cosine(sample, candidate) >= this; None = no threshold.
        min_margin: require cosine(sample, candidate) - cosine(sample, runner-up) >= this,
            the runner-up being the second most similar proxy of the candidate's camera;
            None = no margin. With ``mutual=False`` and neither threshold every
            candidate passes.

    Returns:
        :class:`CrossCameraLinks`, sorted by (sample, proxy); at most one link per
        (sample, other camera), none to the sample's own pseudo-identity.
    """
    dev = proxies.device
    own, labels, cams = (_long(a, dev) for a in (sample_proxy, proxy_labels, proxy_cams))
    if own.numel() != features.shape[0]:
        raise ValueError(f"{features.shape[0]} features but {own.numel()} sample proxies")
    if labels.numel() != proxies.shape[0] or cams.numel() != proxies.shape[0]:
        raise ValueError(f"{proxies.shape[0]} proxies but {labels.numel()} labels and "
                         f"{cams.numel()} cameras")
    empty = CrossCameraLinks(np.empty(0, np.int64), np.empty(0, np.int64),
                             np.empty(0, np.float32))
    if own.numel() == 0 or proxies.shape[0] == 0:
        return empty
    if bool((own < 0).any()):
        raise ValueError("associate_proxies: sample_proxy holds -1 (outliers); drop them first")
    num_cams = int(cams.max()) + 1
    p = F.normalize(proxies.float(), dim=1)
    x = F.normalize(features.detach().float().to(dev), dim=1)
    step = max(1, _BLOCK_ELEMS // max(1, p.shape[0]))
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for s in range(0, x.shape[0], step):
        sims = x[s : s + step] @ p.t()
        cand, cand_sim = _nearest_per_camera(sims, cams, num_cams)
        rows, cam_b = torch.nonzero(cand >= 0, as_tuple=True)
        prox, sim = cand[rows, cam_b], cand_sim[rows, cam_b]
        mine = own[s : s + step][rows]
        keep = (cams[prox] != cams[mine]) & (labels[prox] != labels[mine])
        if min_similarity is not None:
            keep &= sim >= float(min_similarity)
        if min_margin is not None:
            second = _runner_up_per_camera(sims, cams, num_cams, cand)[rows, cam_b]
            keep &= sim - second >= float(min_margin)
        rows, prox, sim, mine = rows[keep], prox[keep], sim[keep], mine[keep]
        if mutual and rows.numel():
            # From the candidate proxy, the nearest proxy of the sample's camera.
            back, _ = _nearest_per_camera(p[prox] @ p.t(), cams, num_cams)
            ok = back.gather(1, cams[mine][:, None]).squeeze(1) == mine
            rows, prox, sim = rows[ok], prox[ok], sim[ok]
        parts.append((rows + s, prox, sim))
    sample = torch.cat([a for a, _, _ in parts]).cpu().numpy().astype(np.int64)
    proxy = torch.cat([b for _, b, _ in parts]).cpu().numpy().astype(np.int64)
    similarity = torch.cat([c for _, _, c in parts]).cpu().numpy().astype(np.float32)
    order = np.lexsort((proxy, sample))
    return CrossCameraLinks(sample[order], proxy[order], similarity[order])


def link_precision(
    links: CrossCameraLinks,
    sample_pids: np.ndarray,
    proxy_index: np.ndarray,
    true_pids: np.ndarray,
) -> float:
    """Share of links whose sample has the majority true identity of the linked proxy.

    Args:
        links: from :func:`associate_proxies`.
        sample_pids: (B,) true identity of each row of the features the links came from.
        proxy_index: (N,) proxy of every sample of the set the proxies were built from
            (``-1`` = none) and ``true_pids`` (N,) their true identities: a proxy's
            identity is its members' most frequent one (ties: the smallest id).

    Returns:
        fraction in [0, 1]; NaN without links.
    """
    if len(links) == 0:
        return float("nan")
    idx = np.asarray(proxy_index, dtype=np.int64)
    pids = np.asarray(true_pids, dtype=np.int64)
    member = idx >= 0
    pairs, counts = np.unique(np.stack([idx[member], pids[member]], axis=1), axis=0,
                              return_counts=True)
    # per proxy: the largest count first, then the smallest id; the first row wins
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    majority = np.full(int(idx.max()) + 1, -1, dtype=np.int64)
    majority[pairs[first, 0]] = pairs[first, 1]
    right = majority[links.proxy] == np.asarray(sample_pids, dtype=np.int64)[links.sample]
    return float(right.mean())
