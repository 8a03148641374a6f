"""Evaluation of a dataset's query split against its gallery split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unreid.eval.metrics import EvalResult, evaluate, evaluate_features

__all__ = ["evaluate_split"]


def evaluate_split(
    q_feats: torch.Tensor,
    g_feats: torch.Tensor,
    dataset: Any,
    *,
    rerank: bool = False,
    max_rank: int = 50,
    standardize_cameras: bool = False,
) -> EvalResult:
    """Query (Q, D) vs gallery (G, D) features of ``dataset`` (an
    :class:`unreid.data.Dataset`), by cosine distance or k-reciprocal re-ranking.

    ``standardize_cameras``: first standardise the features per camera
    (:func:`unreid.cluster.standardize_per_camera`, statistics over the query and
    gallery images of each camera together).
    """
    q, g = dataset.query, dataset.gallery
    labels = (q.pids, g.pids, q.camids, g.camids)
    if standardize_cameras:
        from unreid.cluster import standardize_per_camera

        both = standardize_per_camera(
            torch.cat([q_feats, g_feats]), np.concatenate([q.camids, g.camids])
        )
        q_feats, g_feats = both[: len(q_feats)], both[len(q_feats) :]
    if rerank:
        from unreid.cluster import rerank as k_reciprocal_rerank

        return evaluate(k_reciprocal_rerank(q_feats, g_feats), *labels, max_rank=max_rank)
    return evaluate_features(q_feats, g_feats, *labels, max_rank=max_rank)
