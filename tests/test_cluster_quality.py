"""label_quality: exact values on a hand case, brute-force pair counts, invariances, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unreid.cluster import cross_camera_nn_share, label_quality
from unreid.errors import ClusteringError

PRED = np.array([0, 0, 0, 1, 1, -1])
TRUE = np.array([7, 7, 8, 8, 8, 9])
CAMS = np.array([0, 1, 0, 0, 0, 1])


def test_label_quality_hand_case_exact_values():
    q = label_quality(PRED, TRUE, CAMS)
    assert q["num_samples"] == 6 and q["num_true_ids"] == 3
    assert q["num_clusters"] == 2 and q["num_outliers"] == 1
    assert q["outlier_ratio"] == pytest.approx(1 / 6)
    # predicted pairs: C(3,2) + C(2,2) = 4, correct: (7,7) and (8,8) = 2;
    # true pairs over all samples: C(2,2) + C(3,2) + C(1,2) = 4
    assert q["pair_precision"] == pytest.approx(0.5)
    assert q["pair_recall"] == pytest.approx(0.5)
    assert q["pair_f1"] == pytest.approx(0.5)
    # cluster 0 spans cameras {0, 1}, cluster 1 only camera 0
    assert q["multi_camera_share"] == pytest.approx(0.5)
    # cross-camera pairs: (0, 1) one identity, (1, 2) not; cluster 1 lies in one camera
    assert q["cross_camera_pairs"] == 2
    assert q["cross_camera_pair_precision"] == pytest.approx(0.5)
    # ARI with the outlier as a singleton: index 2, expected 4*4/15, max 4 -> 7/22
    assert q["ari"] == pytest.approx(7 / 22, abs=1e-12)
    # non-outliers only: index 2, expected 4*4/10, max 4 -> 1/6
    assert q["ari_clustered"] == pytest.approx(1 / 6, abs=1e-12)
    # NMI: both label sets have cluster sizes (3, 2, 1) -> equal entropies H, NMI = MI / H
    h = -sum(p * math.log(p) for p in (1 / 2, 1 / 3, 1 / 6))
    mi = 1 / 3 * math.log(2) + 1 / 6 * math.log(2 / 3) + 1 / 3 * math.log(2) + 1 / 6 * math.log(6)
    assert q["nmi"] == pytest.approx(mi / h, abs=1e-12)


def test_label_quality_perfect_and_all_outlier_labels():
    perfect = label_quality(TRUE - 7, TRUE, CAMS)
    assert perfect["ari"] == pytest.approx(1.0) and perfect["nmi"] == pytest.approx(1.0)
    assert perfect["pair_precision"] == perfect["pair_recall"] == perfect["pair_f1"] == 1.0
    assert perfect["num_clusters"] == 3 and perfect["num_outliers"] == 0

    none = label_quality(np.full(6, -1), TRUE, CAMS)
    assert none["num_clusters"] == 0 and none["outlier_ratio"] == 1.0
    assert none["pair_precision"] == none["pair_recall"] == none["pair_f1"] == 0.0
    assert none["multi_camera_share"] == 0.0
    assert math.isnan(none["ari_clustered"]) and math.isnan(none["nmi_clustered"])
    assert none["ari"] == pytest.approx(0.0)  # all singletons vs. identities with pairs


def brute_force_pairs(pred, true, cams):
    tp = pp = tt = cross = cross_tp = 0
    for i, j in itertools.combinations(range(len(pred)), 2):
        same_pred = pred[i] >= 0 and pred[i] == pred[j]
        same_true = true[i] == true[j]
        pp += same_pred
        tt += same_true
        tp += same_pred and same_true
        if same_pred and cams[i] != cams[j]:
            cross += 1
            cross_tp += same_true
    return tp, pp, tt, cross, cross_tp


samples = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-1, 5), min_size=n, max_size=n),
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


@settings(max_examples=100, deadline=None)
@given(data=samples, perm_seed=st.integers(0, 1000))
def test_label_quality_matches_brute_force_and_ignores_cluster_ids(data, perm_seed):
    pred, true, cams = (np.array(a, dtype=np.int64) for a in data)
    q = label_quality(pred, true, cams)
    tp, pp, tt, cross, cross_tp = brute_force_pairs(pred, true, cams)
    assert q["cross_camera_pairs"] == cross
    assert q["cross_camera_pair_precision"] == pytest.approx(cross_tp / cross if cross else 0.0)
    assert q["pair_precision"] == pytest.approx(tp / pp if pp else 0.0)
    assert q["pair_recall"] == pytest.approx(tp / tt if tt else 0.0)
    clusters = sorted(set(pred.tolist()) - {-1})
    multi = [len(set(cams[pred == c].tolist())) >= 2 for c in clusters]
    assert q["multi_camera_share"] == pytest.approx(np.mean(multi) if multi else 0.0)
    assert q["num_outliers"] == int((pred == -1).sum())
    # renaming clusters (and identities) changes nothing
    perm = np.random.default_rng(perm_seed).permutation(10)
    renamed = np.where(pred >= 0, perm[np.maximum(pred, 0)] + 100, -1)
    q2 = label_quality(renamed, true * 3 + 1, cams)
    for key, value in q.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(q2[key])
        else:
            assert q2[key] == pytest.approx(value), key


@pytest.mark.parametrize(
    ("pred", "true", "cams", "match"),
    [
        (np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64), "length 3"),
        (np.zeros(3), np.zeros(3, np.int64), np.zeros(3, np.int64), "integer"),
        (np.zeros(2, np.int64), np.array([0, -1]), np.zeros(2, np.int64), "unknown"),
        (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), "no samples"),
    ],
)
def test_label_quality_bad_input(pred, true, cams, match):
    with pytest.raises(ClusteringError, match=match):
        label_quality(pred, true, cams)


def test_cross_camera_nn_share_asks_each_sample_for_its_nearest_other_camera_image() -> None:
    feats = np.array([
        [1.0, 0.0, 0.0],  # 0: person 0, camera 0
        [0.0, 1.0, 0.0],  # 1: person 1, camera 0
        [1.0, 0.1, 0.0],  # 2: person 0, camera 1
        [1.0, 0.2, 0.0],  # 3: person 1, camera 1 (but looks like person 0)
        [0.0, 0.0, 1.0],  # 4: person 2, camera 2 (orthogonal to all: tie -> sample 0)
    ])
    pids, cams = np.array([0, 1, 0, 1, 2]), np.array([0, 0, 1, 1, 2])
    # nearest in another camera: 0 -> 2 (right), 1 -> 3 (right), 2 -> 0 (right),
    # 3 -> 0 (wrong), 4 -> 0 (wrong)
    assert cross_camera_nn_share(feats, pids, cams) == pytest.approx(3 / 5)
    # at most 2 samples asked, evenly spaced: 0 (right) and 4 (wrong)
    assert cross_camera_nn_share(feats, pids, cams, max_queries=2) == pytest.approx(1 / 2)
    assert np.isnan(cross_camera_nn_share(feats, pids, np.zeros(5, dtype=np.int64)))
    with pytest.raises(ClusteringError, match="5 features but 4 true_pids"):
        cross_camera_nn_share(feats, pids[:4], cams)
