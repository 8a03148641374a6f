"""RSL reliable/soft labels and PUL selection on hand-made 2-D features with known angles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unreid.cluster import pul_select, reliable_soft_labels
from unreid.cluster.selection import camera_cluster_counts
from unreid.errors import ClusteringError


def unit(deg) -> np.ndarray:
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=-1).astype(np.float32)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


COS = lambda deg: math.cos(math.radians(deg))  # noqa: E731

# Three cameras, one k-means cluster each (per_camera_k=1), so each camera centre is the
# middle direction: camera 0 at 0 deg (similarity cos 10 = 0.985 > 0.85: kept), camera 1 at
# 90 deg (cos 40 = 0.766: rejected), camera 2 at 180 deg (cos 10: kept).
RSL_ANGLES = [10, -10, 50, 130, 170, 190]
RSL_CAMS = np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("t", [0.02, 1.0])
def test_rsl_hand_case_selection_labels_and_soft_targets(t):
    labels, soft, selected, _ = reliable_soft_labels(
        unit(RSL_ANGLES), RSL_CAMS, 1, 2, lambda_=0.85, t=t, seed=0
    )
    assert selected.tolist() == [True, True, False, False, True, True]
    assert labels[2] == labels[3] == -1
    assert labels[0] == labels[1] and labels[4] == labels[5] and labels[0] != labels[4]
    assert set(labels[selected].tolist()) == {0, 1}
    assert soft.dtype == np.float32 and soft.shape == (2, 2)
    # Reliable classes sit at 0 and 180 degrees; rows follow np.flatnonzero(~selected) = [2, 3].
    # 50 deg: logits (cos 50, -cos 50) / t -> p(class at 0 deg) = sigmoid(2 cos 50 / t).
    p50 = sigmoid(2 * COS(50) / t)
    assert soft[0, labels[0]] == pytest.approx(p50, abs=1e-6)
    assert soft[1, labels[0]] == pytest.approx(1 - p50, abs=1e-6)  # 130 deg mirrors 50 deg
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)


def test_rsl_low_lambda_selects_everyone_and_returns_no_soft_rows():
    labels, soft, selected, _ = reliable_soft_labels(
        unit(RSL_ANGLES), RSL_CAMS, 1, 2, lambda_=0.7, seed=0
    )
    assert selected.all() and soft.shape == (0, 2)
    # Two reliable classes around 0 and 180 degrees; 50 and 130 go to the nearer one.
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rsl_single_camera_derives_mk_equal_to_m(seed):
    # One camera: M_k = M = 2. Camera clusters {5, -5, 80} (centre 24.4 deg) and {175, 185};
    # 80 deg has similarity cos 55.6 = 0.565 to its centre and is the only rejected sample.
    x = unit([5, -5, 80, 175, 185])
    labels, soft, selected, _ = reliable_soft_labels(x, np.zeros(5, np.int64), None, 2, seed=seed)
    assert selected.tolist() == [True, True, False, True, True]
    assert labels[0] == labels[1] != labels[3] == labels[4]
    t = 0.02  # the default; classes at 0 and 180 deg: logits cos 80 / t and cos 100 / t
    assert soft[0, labels[0]] == pytest.approx(sigmoid(2 * COS(80) / t), abs=1e-5)


def test_rsl_too_few_reliable_samples_for_m_is_a_clear_error():
    with pytest.raises(ClusteringError, match=r"only 4 of 6 .*M=5.*cluster.lambda_"):
        reliable_soft_labels(unit(RSL_ANGLES), RSL_CAMS, 1, 5, seed=0)
    with pytest.raises(ClusteringError, match="only 0 of 6"):
        reliable_soft_labels(unit(RSL_ANGLES), RSL_CAMS, 1, 2, lambda_=0.999, seed=0)


def test_rsl_is_deterministic_and_consistent_on_random_data():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(10), 6)
    x = (rng.normal(size=(10, 16))[ids] + 0.5 * rng.normal(size=(60, 16))).astype(np.float32)
    cams = rng.integers(0, 3, size=60)
    out1 = reliable_soft_labels(x, cams, None, 8, lambda_=0.6, t=0.1, seed=3)
    out2 = reliable_soft_labels(x, cams, None, 8, lambda_=0.6, t=0.1, seed=3)
    for a, b in zip(out1, out2):
        assert np.array_equal(a, b)
    labels, soft, selected, _ = out1
    assert np.array_equal(labels >= 0, selected)
    assert set(labels[selected].tolist()) <= set(range(8))
    assert soft.shape == (int((~selected).sum()), 8)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(soft >= 0)


def test_camera_cluster_counts_default_and_explicit_forms():
    cams = np.repeat([0, 1, 2], [10, 30, 60])
    # M * n_k / N = 0.7, 2.1, 4.2 -> 1, 2, 4 (round half up, at least 1)
    assert camera_cluster_counts(cams, None, 7) == {0: 1, 1: 2, 2: 4}
    assert camera_cluster_counts(cams, 0, 7) == {0: 1, 1: 2, 2: 4}
    assert camera_cluster_counts(cams, None, 5) == {0: 1, 1: 2, 2: 3}  # 0.5, 1.5, 3.0
    assert camera_cluster_counts(cams, None, 1) == {0: 1, 1: 1, 2: 1}  # never 0
    assert camera_cluster_counts(cams, None, 500) == {0: 10, 1: 30, 2: 60}  # capped at n_k
    assert camera_cluster_counts(cams, 20, 7) == {0: 10, 1: 20, 2: 20}
    assert camera_cluster_counts(cams, [3, 4, 5], 7) == {0: 3, 1: 4, 2: 5}
    assert camera_cluster_counts(cams, np.array([3, 4, 5]), 7) == {0: 3, 1: 4, 2: 5}
    assert camera_cluster_counts(cams, {2: 9, 0: 1, 1: 2}, 7) == {0: 1, 1: 2, 2: 9}


@pytest.mark.parametrize(
    ("per_camera_k", "match"),
    [
        ([3, 4], "camera ids \\[2\\]"),
        ({0: 1, 1: 1}, "camera ids \\[2\\]"),
        (-2, ">= 1"),
        ([1, 0, 1], ">= 1"),
        ("abc", ">= 1"),
        (1.5, "must be None"),
    ],
)
def test_camera_cluster_counts_bad_values(per_camera_k, match):
    with pytest.raises(ClusteringError, match=match):
        camera_cluster_counts(np.array([0, 1, 2]), per_camera_k, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"M": 0}, "M"),
        ({"t": 0.0}, "soft_temperature"),
        ({"lambda_": float("nan")}, "lambda_"),
        ({"camids": np.zeros(5, np.int64)}, "camids"),
        ({"camids": np.zeros(6)}, "camids"),
        ({"features": np.full((6, 2), np.nan)}, "NaN"),
        ({"seed": -3}, "seed"),
    ],
)
def test_rsl_bad_arguments_raise_clustering_error(kwargs, match):
    args = {
        "features": unit(RSL_ANGLES),
        "camids": RSL_CAMS,
        "per_camera_k": 1,
        "M": 2,
        "seed": 0,
    } | kwargs
    with pytest.raises(ClusteringError, match=match) as err:
        reliable_soft_labels(**args)
    assert "\n" not in str(err.value)


# PUL: K=2 global clusters {10, -10} (centre 0 deg) and {170, 190, 130}, whose centre is the
# direction of (cos 170 + cos 190 + cos 130, sin 170 + sin 190 + sin 130), i.e. 163.66 deg;
# 130 deg lies 33.66 deg from it (similarity 0.832 < 0.85) and is dropped.
PUL_ANGLES = [10, -10, 170, 190, 130]


def test_pul_hand_case_labels_centres_and_selection():
    labels, centres, selected, similarity = pul_select(unit(PUL_ANGLES), 2, 0.85, 0)
    assert selected.tolist() == [True, True, True, True, False]
    # the similarity lambda compared: cos 10 deg to the 0-deg centre, cos 33.66 deg for 130
    np.testing.assert_allclose(similarity[[0, 1, 4]], [COS(10), COS(10), COS(163.66 - 130)],
                               atol=1e-4)
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert labels[4] == -1 and labels.dtype == np.int64
    assert centres.shape == (2, 2) and centres.dtype == np.float32
    np.testing.assert_allclose(centres[labels[0]], [1.0, 0.0], atol=1e-6)
    b = unit([170, 190, 130]).astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(centres[labels[2]], b / np.linalg.norm(b), atol=1e-6)
    sim130 = float(unit(130).astype(np.float64) @ (b / np.linalg.norm(b)))
    assert sim130 == pytest.approx(COS(163.66 - 130), abs=1e-4)  # centre at 163.66 deg
    # lowering lambda below that similarity keeps 130 deg in its k-means cluster
    labels2, _, selected2, _ = pul_select(unit(PUL_ANGLES), 2, 0.83, 0)
    assert selected2.all() and labels2[4] == labels2[2]


def test_pul_nothing_selected_or_too_many_clusters_raise():
    with pytest.raises(ClusteringError, match="lower cluster.lambda_"):
        pul_select(unit(PUL_ANGLES), 2, 1.0, 0)
    with pytest.raises(ClusteringError, match="k=6"):
        pul_select(unit(PUL_ANGLES), 6, 0.5, 0)


def test_select_above_keeps_the_most_similar_when_too_few_pass() -> None:
    from unreid.cluster.selection import select_above

    sim = np.array([0.9, 0.2, 0.5, 0.86, 0.5, 0.1])
    assert select_above(sim, 0.85).tolist() == [True, False, False, True, False, False]
    assert select_above(sim, 0.85, min_keep=2).tolist() == [True, False, False, True, False,
                                                            False]
    # 3 wanted, 2 pass: the cut drops to the 3rd largest (0.5), and both 0.5s are kept
    assert select_above(sim, 0.85, min_keep=3).tolist() == [True, False, True, True, True,
                                                            False]
    assert select_above(sim, 0.95, min_keep=10).all()


def test_min_keep_rescues_a_selection_that_would_be_empty() -> None:
    from unreid.cluster import pul_select, reliable_soft_labels

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16))  # spread: nothing is within cosine 0.99 of a centre
    cams = np.repeat([0, 1], 30)
    with pytest.raises(ClusteringError):
        pul_select(x, 4, 0.99, seed=0)
    _, _, sel, similarity = pul_select(x, 4, 0.99, seed=0, min_keep=12)
    # the floor kept the 12 most similar; lambda alone keeps none of them
    assert sel.sum() == 12 and not (similarity > 0.99).any()
    assert similarity[sel].min() >= similarity[~sel].max()
    labels, soft, sel, similarity = reliable_soft_labels(x, cams, None, 3, 0.99, seed=0,
                                                         min_keep=15)
    assert sel.sum() == 15 and soft.shape == (45, 3) and set(labels[sel]) == {0, 1, 2}
    assert not (similarity > 0.99).any() and similarity[sel].min() >= similarity[~sel].max()
