"""Evaluation of a dataset's query split against its gallery split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unreid.eval.metrics import EvalResult, evaluate_protocol

__all__ = ["evaluate_split"]


def evaluate_split(
    q_feats: torch.Tensor,
    g_feats: torch.Tensor,
    dataset: Any,
    *,
    rerank: bool = False,
    max_rank: int = 50,
    standardize_cameras: bool = False,
    protocol: str = "auto",
) -> EvalResult:
    """Query (Q, D) vs gallery (G, D) features of ``dataset`` (an
    :class:`unreid.data.Dataset`), by cosine distance or k-reciprocal re-ranking, under
    ``protocol`` (``auto``, ``market`` or ``all-gallery``; :mod:`unreid.eval.protocol`).

    ``standardize_cameras``: first standardise the features per camera
    (:func:`unreid.cluster.standardize_per_camera`, statistics over the query and
    gallery images of each camera together).

    The result's ``note`` is set when ``auto`` chose all-gallery (one camera).
    """
    q, g = dataset.query, dataset.gallery
    if standardize_cameras:
        # unreid.cluster brings scikit-learn (~1 s of CPU): `unreid eval` pays for it only
        # with camera.standardize_test
        from unreid.cluster import standardize_per_camera

        both = standardize_per_camera(
            torch.cat([q_feats, g_feats]), np.concatenate([q.camids, g.camids])
        )
        q_feats, g_feats = both[: len(q_feats)], both[len(q_feats) :]
    paths = (np.asarray(q.paths, dtype=str), np.asarray(g.paths, dtype=str))
    return evaluate_protocol(q_feats, g_feats, q.pids, g.pids, q.camids, g.camids,
                             protocol=protocol, paths=paths, rerank=rerank, max_rank=max_rank)
