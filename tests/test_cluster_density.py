"""Jaccard + DBSCAN in one call, its neighbourhood sizes for small sets, and the class-count
estimate: hand-made duplicates in orthogonal directions, and the composition on random data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.cluster import (
    CameraJaccard,
    ca_jaccard_distance,
    dbscan,
    estimate_num_classes,
    jaccard_dbscan,
    jaccard_distance,
    shrink_k,
)
from unreid.errors import ClusteringError

E = torch.eye(4)
# Two people (e1, e0) interleaved, five images each, and one image of a third (e2).
TWO_PEOPLE = torch.stack([E[1], E[0]] * 5 + [E[2]])
TWO_PEOPLE_LABELS = [0, 1] * 5 + [-1]


@pytest.mark.parametrize(
    ("k1", "k2", "n", "expected"),
    [(30, 6, 100, (30, 6)), (30, 6, 4, (4, 4)), (13, 6, 3, (3, 3)), (5, 2, 3, (3, 2))],
)
def test_shrink_k_caps_k1_at_n_and_k2_at_k1(k1, k2, n, expected) -> None:
    assert shrink_k(k1, k2, n) == expected


def test_jaccard_dbscan_numbers_clusters_by_first_sample_and_drops_the_loner() -> None:
    labels = jaccard_dbscan(TWO_PEOPLE, k1=5, k2=2, eps=0.5, min_samples=4)
    assert labels.tolist() == TWO_PEOPLE_LABELS and labels.dtype == np.int64


def test_jaccard_dbscan_is_dbscan_of_the_cut_jaccard_graph() -> None:
    gen = torch.Generator().manual_seed(3)
    centres = F.normalize(torch.randn(5, 16, generator=gen), dim=1)
    x = F.normalize(centres.repeat_interleave(9, 0) + 0.3 * torch.randn(45, 16, generator=gen),
                    dim=1)
    for eps in (0.3, 0.5, 0.7):
        composed = dbscan(jaccard_distance(x, k1=8, k2=3, cutoff=eps), eps, min_samples=3)
        assert jaccard_dbscan(x, k1=8, k2=3, eps=eps, min_samples=3).tolist() == composed.tolist()


def test_jaccard_dbscan_warns_about_all_outliers_unless_asked_not_to() -> None:
    with pytest.warns(UserWarning, match="all 11 samples are outliers"):
        labels = jaccard_dbscan(TWO_PEOPLE, k1=5, k2=2, eps=0.5, min_samples=6)
    assert (labels == -1).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = jaccard_dbscan(TWO_PEOPLE, k1=5, k2=2, eps=0.5, min_samples=6, warn=False)
    assert quiet.tolist() == labels.tolist()


def test_jaccard_dbscan_rejects_k1_above_n() -> None:
    with pytest.raises(ClusteringError, match="k1"):
        jaccard_dbscan(TWO_PEOPLE, k1=30, k2=6, eps=0.5, min_samples=4)


def test_estimate_num_classes_counts_the_clusters_at_least_minimum() -> None:
    knobs = {"k1": 5, "k2": 2, "eps": 0.5, "min_samples": 4}
    assert estimate_num_classes(TWO_PEOPLE, **knobs) == 2
    three = torch.cat([TWO_PEOPLE[:10], E[2].repeat(5, 1)])
    assert estimate_num_classes(three, **knobs) == 3
    # the loner alone does not make a class; with minimum 3 the answer is still 3
    assert estimate_num_classes(TWO_PEOPLE, **knobs, minimum=3) == 3
    # nothing clusters: the minimum (2 by default), without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert estimate_num_classes(TWO_PEOPLE, k1=5, k2=2, eps=0.5, min_samples=20) == 2
        assert estimate_num_classes(TWO_PEOPLE, k1=5, k2=2, eps=0.5, min_samples=20,
                                    minimum=0) == 0


def test_estimate_num_classes_lowers_k_to_fit_a_small_set() -> None:
    # 3 samples and k1 = 30: clustered with k1 = k2 = 3, where all three are one cluster
    assert estimate_num_classes(E[[0, 0, 0]], k1=30, k2=6, eps=0.5, min_samples=2,
                                minimum=1) == 1
    small = E[[0, 1, 0, 1, 0, 1]]
    assert estimate_num_classes(small, k1=30, k2=6, eps=0.5, min_samples=2, minimum=0) == (
        estimate_num_classes(small, k1=6, k2=6, eps=0.5, min_samples=2, minimum=0)
    )


def test_estimate_num_classes_finds_six_noisy_groups() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, 96, generator=gen), dim=1)
    x = F.normalize(centres.repeat_interleave(8, 0) + 0.05 * torch.randn(48, 96, generator=gen),
                    dim=1)
    assert estimate_num_classes(x, k1=10, k2=3, eps=0.6, min_samples=4) == 6
    spread = F.normalize(torch.randn(20, 96, generator=gen), dim=1)
    assert estimate_num_classes(spread, k1=30, k2=6, eps=0.01, min_samples=4) == 2


# Two people x two cameras x three identical images: person p is e_p, camera c adds 1.5 e_{4+c}.
# The camera offset outweighs the person, so every image's nearest strangers share its camera.
CAMS = np.repeat([0, 1], 6)
PEOPLE = np.tile(np.repeat([0, 1], 3), 2)
TWO_VIEWS = torch.eye(6)[PEOPLE] + 1.5 * torch.eye(6)[4 + CAMS]


def test_camera_option_swaps_in_the_camera_aware_jaccard_distance() -> None:
    cam = CameraJaccard(CAMS, k1_intra=2, k1_inter=2, k2_intra=1, k2_inter=1)
    close = {
        "plain": jaccard_distance(TWO_VIEWS, k1=3, k2=1, cutoff=0.5),
        "camera": ca_jaccard_distance(TWO_VIEWS, CAMS, k1_intra=2, k1_inter=2, k2_intra=1,
                                      k2_inter=1, cutoff=0.5),
    }
    # the pairs the DBSCAN graph keeps: one (person, camera) plainly, one person camera-aware
    same = PEOPLE[:, None] == PEOPLE[None, :]
    same_cam = CAMS[:, None] == CAMS[None, :]
    for name, want in (("plain", same & same_cam), ("camera", same)):
        got = np.zeros((12, 12), dtype=bool)
        coo = close[name].tocoo()
        got[coo.row, coo.col] = True
        assert got.tolist() == want.tolist(), name
    plain = jaccard_dbscan(TWO_VIEWS, k1=3, k2=1, eps=0.5, min_samples=2)
    aware = jaccard_dbscan(TWO_VIEWS, k1=3, k2=1, eps=0.5, min_samples=2, camera=cam)
    assert plain.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert aware.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]
    assert aware.tolist() == dbscan(close["camera"], 0.5, min_samples=2).tolist()
    # the class-count estimate follows the same option
    assert estimate_num_classes(TWO_VIEWS, k1=3, k2=1, eps=0.5, min_samples=2) == 4
    assert estimate_num_classes(TWO_VIEWS, k1=3, k2=1, eps=0.5, min_samples=2,
                                camera=cam) == 2
