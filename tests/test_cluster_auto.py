"""cluster.auto: Jaccard + DBSCAN knobs chosen from planted clusters of known size."""

from __future__ import annotations

import numpy as np
import pytest

from unreid.cluster import auto_cluster_params, jaccard_dbscan, label_quality
from unreid.cluster.auto import estimate_images_per_id, k2_for
from unreid.errors import ClusteringError


def planted(ids: int, per_id: int, *, dim: int = 32, noise: float = 0.05, seed: int = 0):
    """(ids * per_id, dim) features: ``per_id`` noisy copies of each of ``ids`` random unit
    centres, and the true identity of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pids = np.repeat(np.arange(ids), per_id)
    feats = centres[pids] + noise * rng.normal(size=(len(pids), dim))
    return feats.astype(np.float32), pids


@pytest.mark.parametrize("per_id", [2, 4, 8, 16])
def test_auto_recovers_planted_identities_at_every_size(per_id: int) -> None:
    feats, pids = planted(30, per_id)
    choice = auto_cluster_params(feats)
    labels = jaccard_dbscan(feats, **choice.params())
    q = label_quality(labels, pids, np.zeros_like(pids))
    assert q["num_clusters"] == 30 and q["num_outliers"] == 0 and q["ari"] == 1.0
    assert choice.num_clusters == 30 and choice.outlier_share == 0.0
    assert choice.images_per_cluster == pytest.approx(per_id)
    assert choice.images_per_id == estimate_images_per_id(feats) == per_id
    assert choice.k1 >= per_id and choice.min_samples <= max(2, per_id)
    assert f"~{per_id} images per identity" in choice.reason
    assert "most clusters (30, 0 % outliers)" in choice.reason


def test_defaults_fail_on_two_images_per_identity_where_auto_does_not() -> None:
    feats, pids = planted(30, 2)
    cams = np.zeros_like(pids)
    defaults = jaccard_dbscan(feats, k1=30, k2=6, eps=0.6, min_samples=4, warn=False)
    # 30 neighbours of 60 samples: every k-reciprocal set spans many people, all merge
    assert label_quality(defaults, pids, cams)["num_clusters"] == 1
    choice = auto_cluster_params(feats)
    assert choice.min_samples == 2 and choice.k1 == 5
    auto = jaccard_dbscan(feats, **choice.params())
    assert label_quality(auto, pids, cams)["ari"] == 1.0


def test_auto_prefers_the_smaller_k1_eps_and_min_samples_on_ties() -> None:
    feats, _ = planted(10, 4)
    choice = auto_cluster_params(feats, k1_choices=(10, 5), eps_choices=(0.6, 0.5),
                                 min_samples_choices=(3, 2))
    # every candidate gives the 10 clusters without outliers here: the smallest wins
    assert (choice.k1, choice.k2, choice.eps, choice.min_samples) == (5, 2, 0.5, 2)
    assert choice.candidates == 8


def test_auto_keeps_k1_out_of_the_fragmenting_range() -> None:
    feats, _ = planted(10, 16)
    choice = auto_cluster_params(feats, k1_choices=(5, 10, 20, 30))
    assert choice.k1 == 20  # 5 and 10 < 16 images per identity; 30 <= 3 x 16 would do too


def test_images_per_id_estimate_is_small_without_structure() -> None:
    rng = np.random.default_rng(0)
    assert estimate_images_per_id(rng.normal(size=(200, 64)).astype(np.float32)) <= 3
    assert estimate_images_per_id(np.eye(3, dtype=np.float32)) == 2  # too few to look


def test_auto_caps_k1_at_the_sample_count_and_is_deterministic() -> None:
    feats, _ = planted(3, 2)
    a = auto_cluster_params(feats)
    assert a.k1 <= 6 and a == auto_cluster_params(feats)
    assert set(a.as_dict()) == {"k1", "k2", "eps", "min_samples", "num_clusters",
                                "outlier_share", "images_per_cluster", "candidates",
                                "images_per_id", "reason"}


def test_k2_keeps_the_papers_ratio_within_bounds() -> None:
    assert [k2_for(k) for k in (1, 2, 5, 10, 20, 30)] == [1, 2, 2, 2, 4, 6]


@pytest.mark.parametrize("kwargs", [{"eps_choices": (0.0,)}, {"min_samples_choices": (1,)},
                                    {"k1_choices": ()}])
def test_auto_rejects_bad_choices(kwargs) -> None:
    feats, _ = planted(3, 2)
    with pytest.raises(ClusteringError):
        auto_cluster_params(feats, **kwargs)


def test_auto_needs_two_samples() -> None:
    with pytest.raises(ClusteringError, match="at least 2 samples"):
        auto_cluster_params(np.ones((1, 4), dtype=np.float32))
