"""Label health: exact numbers on a hand-made labelling, and each warning's threshold."""

from __future__ import annotations

import numpy as np
import pytest

from unreid.cluster import health_warnings, label_health
from unreid.cluster.health import LIMITS, outliers_as_singletons
from unreid.errors import ClusteringError

LABELS = np.array([0, 0, 0, 1, 1, -1, 2, -1])
CAMS = np.array([0, 1, 0, 0, 0, 1, 1, 1])


def test_health_numbers_of_a_hand_made_labelling() -> None:
    h = label_health(LABELS, CAMS)
    assert h == {
        "num_samples": 8, "num_clusters": 3, "num_outliers": 2, "outlier_share": 0.25,
        "largest_cluster_share": 3 / 8, "singletons": 1,
        # camera 0 holds clusters 0 and 1, camera 1 clusters 0 and 2
        "clusters_per_camera": [2, 2],
        "multi_camera_share": 1 / 3,  # only cluster 0 spans both cameras
        "agreement": None,
    }


def test_agreement_is_the_ari_of_consecutive_labels_with_outliers_as_singletons() -> None:
    assert label_health(LABELS, CAMS, LABELS)["agreement"] == 1.0
    renamed = np.array([5, 5, 5, 3, 3, -1, 9, -1])  # same partition, other ids
    assert label_health(renamed, CAMS, LABELS)["agreement"] == 1.0
    # two outliers joining one cluster is a different partition
    joined = np.array([0, 0, 0, 1, 1, 3, 2, 3])
    assert label_health(joined, CAMS, LABELS)["agreement"] < 1.0
    assert outliers_as_singletons(LABELS).tolist() == [0, 0, 0, 1, 1, 3, 2, 4]


def test_without_cameras_the_camera_numbers_are_none() -> None:
    h = label_health(LABELS, np.zeros(8, dtype=int), has_cameras=False)
    assert h["clusters_per_camera"] is None and h["multi_camera_share"] is None


def test_all_outliers_have_no_cluster_numbers() -> None:
    h = label_health(np.full(4, -1), np.zeros(4, dtype=int))
    assert (h["num_clusters"], h["outlier_share"], h["largest_cluster_share"]) == (0, 1.0, 0.0)
    assert h["multi_camera_share"] is None


def test_bad_shapes_are_one_line_errors() -> None:
    with pytest.raises(ClusteringError, match="1-D"):
        label_health(LABELS, CAMS[:3])
    with pytest.raises(ClusteringError, match="previous"):
        label_health(LABELS, CAMS, LABELS[:3])


def healthy(**changes) -> dict:
    base = {"num_clusters": 20, "outlier_share": 0.1, "largest_cluster_share": 0.05,
            "singletons": 0, "clusters_per_camera": [12, 12], "multi_camera_share": 0.4,
            "agreement": 0.8}
    return {**base, **changes}


def test_a_healthy_epoch_warns_nothing() -> None:
    assert health_warnings(healthy()) == []
    at_limits = healthy(outlier_share=LIMITS.max_outlier_share,
                        largest_cluster_share=LIMITS.max_largest_share, singletons=10,
                        multi_camera_share=LIMITS.min_multi_camera_share,
                        agreement=LIMITS.min_agreement)
    assert health_warnings(at_limits) == []  # a value at its limit is still sane


def test_the_outlier_warning_names_the_knobs() -> None:
    labels = np.r_[np.full(89, -1), np.repeat(np.arange(5), 2), 5]
    h = label_health(labels, np.zeros(100, dtype=int))
    assert health_warnings(h) == [
        "89 % of samples are outliers: lower cluster.min_samples or raise cluster.eps, or "
        "use cluster.auto"
    ]


def test_under_cluster_auto_the_knob_hint_says_to_set_them_by_hand() -> None:
    lines = health_warnings(healthy(outlier_share=0.6), auto=True)
    assert lines == ["60 % of samples are outliers: lower cluster.min_samples or raise "
                     "cluster.eps; cluster.auto chose them: set cluster.auto=false to set "
                     "them by hand"]


@pytest.mark.parametrize(("change", "start"), [
    ({"largest_cluster_share": 0.21}, "the largest cluster holds 21 % of the samples"),
    ({"singletons": 11}, "55 % of the clusters hold one sample: raise cluster.min_samples"),
    ({"multi_camera_share": 0.04}, "only 4 % of the clusters span two or more cameras"),
    ({"agreement": 0.19}, "the labels agree little with the previous epoch's (ARI 0.19)"),
    ({"outlier_share": 0.51}, "51 % of samples are outliers"),
])
def test_each_warning_fires_just_past_its_limit(change: dict, start: str) -> None:
    lines = health_warnings(healthy(**change))
    assert len(lines) == 1 and lines[0].startswith(start)


def test_camera_warning_needs_two_cameras_and_ten_clusters() -> None:
    assert health_warnings(healthy(multi_camera_share=0.0, clusters_per_camera=[20])) == []
    assert health_warnings(healthy(multi_camera_share=0.0, num_clusters=9)) == []


def test_run_verdict_says_when_a_run_ends_worse_or_degenerate() -> None:
    from unreid.cluster.health import run_verdict

    fine = {"outlier_share": 0.1, "largest_cluster_share": 0.05}
    better = [{"epoch": 0, "eval": {"mAP": 0.031}}, {"epoch": 1, "health": fine},
              {"epoch": 2, "health": fine, "eval": {"mAP": 0.2}}]
    assert run_verdict(better) is None
    worse = [better[0], {"epoch": 1, "health": fine, "eval": {"mAP": 0.009}}]
    assert run_verdict(worse) == ("warning: the run ends worse than it started (mAP 3.1 -> "
                                  "0.9); see the label health warnings above")
    degenerate = [{"epoch": 1, "health": {**healthy(), "outlier_share": 0.89}}]
    assert run_verdict(degenerate) == (
        "warning: the final labels are degenerate: 89 % of samples are outliers: lower "
        "cluster.min_samples or raise cluster.eps, or use cluster.auto")
    assert run_verdict([]) is None


def test_kmeans_labels_name_the_selection_and_class_count_knobs() -> None:
    """PUL/RSL leave unselected samples and set their class count: the advice names
    lambda / min_selected / num_classes, never DBSCAN's knobs or cluster.auto."""
    h = healthy(outlier_share=0.7, largest_cluster_share=0.25, singletons=11,
                multi_camera_share=0.0)
    assert health_warnings(h, labeller="kmeans") == [
        "70 % of samples are not selected (cosine to their centre below cluster.lambda_): "
        "lower cluster.lambda_ or raise cluster.min_selected",
        "the largest cluster holds 25 % of the samples (people merged): raise "
        "cluster.num_classes",
        "55 % of the clusters hold one sample: lower cluster.num_classes",
        "only 0 % of the clusters span two or more cameras (they follow the cameras): k-means "
        "cannot link them; a camera-aware method can (method.name=cap)",
    ]
    with pytest.raises(ValueError, match="labeller='dbscan'"):
        health_warnings(h, labeller="dbscan")


def test_run_verdict_counts_unselected_samples_only_for_density_labels() -> None:
    from unreid.cluster.health import run_verdict

    unselected = [{"epoch": 1, "health": {"outlier_share": 0.7, "largest_cluster_share": 0.05,
                                          "num_clusters": 20, "singletons": 0}}]
    assert run_verdict(unselected, "kmeans") is None
    assert "70 % of samples are outliers" in run_verdict(unselected, "density")
