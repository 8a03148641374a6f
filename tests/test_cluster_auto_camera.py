"""cluster.auto on the camera-aware Jaccard distance, and the labels every choice carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import camera_planted

from unreid.cluster import CameraJaccard, auto_cluster_params, jaccard_dbscan
from unreid.cluster.auto import CA_EPS_CHOICES, EPS_CHOICES, MIN_SAMPLES_CHOICES
from unreid.errors import ClusteringError

# Four people x two cameras x four images in 6-d: person p is e_p, camera c adds 1.5 e_{4+c},
# plus noise 0.15. The camera offset outweighs the person, so every image's nearest
# strangers share its camera: the plain k-reciprocal sets never reach a person's other
# view (distance 1 on the 5-neighbour graph), the camera-aware ones (3 intra, 3 inter)
# hold exactly the person's images (within a person at most 0.18, across people 1).
PEOPLE, PER_VIEW = 4, 4
CAMS = np.tile(np.repeat([0, 1], PER_VIEW), PEOPLE)
PIDS = np.repeat(np.arange(PEOPLE), 2 * PER_VIEW)
VIEWS = PIDS * 2 + CAMS  # (person, camera): what the plain graphs find
NARROW = {"k1_intra": 3, "k1_inter": 3, "k2_intra": 1, "k2_inter": 1}


def two_views() -> torch.Tensor:
    e = torch.eye(PEOPLE + 2)
    noise = 0.15 * torch.randn(len(PIDS), PEOPLE + 2, generator=torch.Generator().manual_seed(0))
    return e[PIDS] + 1.5 * e[PEOPLE + CAMS] + noise


def first_index_numbering(groups: np.ndarray) -> list[int]:
    """``groups`` renumbered 0, 1, ... by first appearance (how DBSCAN labels come)."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse].tolist()


def test_camera_aware_choice_finds_the_people_whose_views_the_plain_graphs_split() -> None:
    x = two_views()
    ca = auto_cluster_params(x, camera=CameraJaccard(CAMS, **NARROW))
    assert ca.labels.tolist() == first_index_numbering(PIDS)  # every person whole
    assert (ca.num_clusters, ca.outlier_share, ca.images_per_cluster) == (4, 0.0, 8.0)
    assert (ca.jaccard, ca.camera_widths) == ("camera_aware", (3, 3, 1, 1))
    assert ca.as_dict()["camera_widths"] == [3, 3, 1, 1] and hash(ca) == hash(ca)
    # every radius gives the people here: the smallest eps and min_samples win the tie
    assert (ca.eps, ca.min_samples) == (0.3, 2)
    assert ("one camera-aware Jaccard graph (k1_intra 3, k1_inter 3, k2_intra 1, "
            "k2_inter 1; the k1 choices do not apply to it") in ca.reason
    assert "most clusters (4, 0 % outliers)" in ca.reason
    # every plain graph (one per k1, with the cameras) keeps the views apart
    plain = auto_cluster_params(x, camids=CAMS)
    assert plain.labels.tolist() == first_index_numbering(VIEWS)
    assert "no camera-balanced cluster on any graph" in plain.reason


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("ids", "per_camera", "camera"), [(20, 4, 0.3), (60, 2, 0.0)])
@pytest.mark.parametrize("graph", ["plain, no cameras", "plain, cameras", "camera_aware",
                                   "camera_aware, warm-up k2"])
def test_choice_labels_are_jaccard_dbscans_at_the_chosen_knobs(dtype, ids, per_camera, camera,
                                                               graph) -> None:
    feats, _, cams = camera_planted(ids, per_camera, camera=camera)
    feats = feats.astype(dtype)
    aware = {"camera_aware": CameraJaccard(cams),
             "camera_aware, warm-up k2": CameraJaccard(cams, k2_intra=3, k2_inter=3)}
    cam = aware.get(graph)
    choice = auto_cluster_params(feats, camids=cams if graph == "plain, cameras" else None,
                                 camera=cam)
    fresh = jaccard_dbscan(feats, **choice.params(), camera=cam, warn=False)
    assert choice.labels.dtype == fresh.dtype == np.int64
    assert choice.labels.tolist() == fresh.tolist()
    assert choice.num_clusters == int(fresh.max()) + 1
    assert choice.outlier_share == float((fresh < 0).mean())
    # a tensor of the same values chooses the same
    again = auto_cluster_params(torch.from_numpy(feats), camids=cams if graph == "plain, cameras"
                                else None, camera=cam)
    assert again == choice and again.labels.tolist() == fresh.tolist()


def test_camera_aware_choice_builds_one_graph_and_no_plain_one(monkeypatch) -> None:
    import unreid.cluster.auto as auto_module

    feats, _, cams = camera_planted(20, 4, camera=0.3)
    built: list[tuple[str, float]] = []
    real_ca, real_plain = auto_module.ca_jaccard_distance, auto_module.jaccard_distance
    monkeypatch.setattr(auto_module, "ca_jaccard_distance",
                        lambda *a, **kw: built.append(("ca", kw["cutoff"])) or real_ca(*a, **kw))
    monkeypatch.setattr(auto_module, "jaccard_distance",
                        lambda *a, **kw: built.append(("plain", kw["cutoff"]))
                        or real_plain(*a, **kw))
    choice = auto_cluster_params(feats, camera=CameraJaccard(cams))
    assert built == [("ca", max(CA_EPS_CHOICES))]  # cut at the largest radius tried
    cores = [m for m in MIN_SAMPLES_CHOICES if m <= max(2, choice.images_per_id)]
    assert choice.candidates == len(CA_EPS_CHOICES) * len(cores)
    assert f"of {choice.candidates} candidates" in choice.reason
    record = choice.as_dict()
    assert json.loads(json.dumps(record)) == record and "labels" not in record


def test_camera_aware_radii_reach_past_the_plain_ones() -> None:
    # Features that separate nobody (Gaussian noise): the camera-aware distances of nearest
    # neighbours sit near 0.7, and the cluster count peaks at 0.75, beyond EPS_CHOICES
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 128)).astype(np.float32)
    cam = CameraJaccard(rng.integers(0, 2, 1000))
    assert (*EPS_CHOICES, 0.75) == CA_EPS_CHOICES
    wide = auto_cluster_params(x, camera=cam)
    clipped = auto_cluster_params(x, camera=cam, eps_choices=EPS_CHOICES)
    assert wide.eps == 0.75 and clipped.eps == max(EPS_CHOICES)
    assert wide.num_clusters > 1.5 * clipped.num_clusters  # measured: 161 against 72


def test_camera_ids_are_given_once() -> None:
    x = two_views()
    cam = CameraJaccard(CAMS, **NARROW)
    same = auto_cluster_params(x, camids=CAMS, camera=cam)
    assert same == auto_cluster_params(x, camera=cam)
    with pytest.raises(ClusteringError, match="camids differ from camera.camids"):
        auto_cluster_params(x, camids=1 - CAMS, camera=cam)
