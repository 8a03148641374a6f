"""The one density clustering of the methods (methods.common.density_labels): configured
knobs exactly as the methods called jaccard_dbscan before, and cluster.auto on the distance
clustered with, its graph built once."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from helpers import camera_planted

from unreid.cluster import (
    CameraJaccard,
    auto_cluster_params,
    estimate_num_classes,
    jaccard_dbscan,
    standardize_per_camera,
)
from unreid.cluster.auto import CA_EPS_CHOICES
from unreid.config import load_config
from unreid.methods import LabelInputs, build_method

# Four people x two cameras x four images (test_cluster_auto_camera.py's world): the plain
# graphs keep each person's two views apart, the camera-aware one (widths 3, 3, 1, 1) joins
# them.
PEOPLE, PER_VIEW = 4, 4
CAMS = np.tile(np.repeat([0, 1], PER_VIEW), PEOPLE)
PIDS = np.repeat(np.arange(PEOPLE), 2 * PER_VIEW)
NARROW = ("camera.k1_intra=3", "camera.k1_inter=3", "camera.k2_intra=1", "camera.k2_inter=1")
METHODS = {
    "cluster_contrast": ("method.name=cluster_contrast",),
    "sfe_cr": ("method.name=sfe_cr", "method.cr=false"),  # the global labels
    "cap": ("method.name=cap",),
    "cap, standardised": ("method.name=cap", "camera.standardize=true"),
}


def two_views() -> torch.Tensor:
    e = torch.eye(PEOPLE + 2)
    noise = 0.15 * torch.randn(len(PIDS), PEOPLE + 2, generator=torch.Generator().manual_seed(0))
    return e[PIDS] + 1.5 * e[PEOPLE + CAMS] + noise


def cfg(*overrides: str):
    return load_config([], ["data.root=/d", "optim.num_identities=2", "optim.num_instances=2",
                            *overrides])


def labels_of(method_args: tuple[str, ...], feats: torch.Tensor, cams: np.ndarray, epoch: int,
              *overrides: str):
    method = build_method(cfg(*method_args, *overrides))
    return method.make_labels(LabelInputs(features=feats, camids=cams, has_cameras=True,
                                          epoch=epoch))


def count_graphs(monkeypatch) -> dict[str, int]:
    """Count the Jaccard graphs built, plain and camera-aware, wherever they are built."""
    built = {"plain": 0, "camera_aware": 0}
    for module_name in ("unreid.cluster.auto", "unreid.cluster.density"):
        module = importlib.import_module(module_name)
        for name, kind in (("jaccard_distance", "plain"), ("ca_jaccard_distance", "camera_aware")):
            real = getattr(module, name)

            def counted(*a, _real=real, _kind=kind, **kw):
                built[_kind] += 1
                return _real(*a, **kw)

            monkeypatch.setattr(module, name, counted)
    return built


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("epoch", [0, 1])
def test_auto_on_the_camera_aware_distance_builds_its_graph_once(monkeypatch, method,
                                                                  epoch) -> None:
    built = count_graphs(monkeypatch)
    out = labels_of(METHODS[method], two_views(), CAMS, epoch, "cluster.auto=true",
                    "cluster.jaccard=camera_aware", *NARROW)
    assert built == {"plain": 0, "camera_aware": 1}
    # the choice's labels are the method's: each person whole, across both cameras
    assert out.labels.tolist() == np.repeat(np.arange(PEOPLE), 2 * PER_VIEW).tolist()
    auto = out.info["auto"]
    # the first epoch's graph has CA-Jaccard's warm-up k2 (3, 3), and the record says so
    k2 = [3, 3] if epoch == 0 else [1, 1]
    assert (auto["jaccard"], auto["camera_widths"]) == ("camera_aware", [3, 3, *k2])
    assert auto["eps"] in CA_EPS_CHOICES and "camera-aware Jaccard graph" in auto["reason"]


@pytest.mark.parametrize("method", ["cluster_contrast", "cap"])
def test_auto_on_the_plain_distance_builds_one_graph_per_k1_and_no_more(monkeypatch,
                                                                        method) -> None:
    feats, _, cams = camera_planted(20, 4, camera=0.3)
    feats = torch.from_numpy(feats)
    built = count_graphs(monkeypatch)
    out = labels_of(METHODS[method], feats, cams, 1, "cluster.auto=true")
    assert built == {"plain": 5, "camera_aware": 0}  # before: a sixth, the chosen one again
    choice = auto_cluster_params(feats, camids=cams)
    assert out.labels.tolist() == choice.labels.tolist()
    assert out.info["auto"] == choice.as_dict()


def test_the_class_count_of_rsl_and_pul_reads_the_choice_without_another_graph(
        monkeypatch) -> None:
    inputs = LabelInputs(features=two_views(), camids=CAMS, has_cameras=True, epoch=1)
    built = count_graphs(monkeypatch)
    for name in ("rsl", "pul"):
        method = build_method(cfg(f"method.name={name}", "cluster.num_classes=0",
                                  "cluster.auto=true", "cluster.jaccard=camera_aware", *NARROW))
        assert method.num_classes_for(inputs) == (PEOPLE, True)
    assert built == {"plain": 0, "camera_aware": 2}


# cluster.auto=false: the configured knobs, exactly the jaccard_dbscan call the methods made
# before density_labels (the same arguments), on weak planted features where the labels are
# neither all one cluster nor all outliers.
KNOBS = {"k1": 10, "k2": 3, "eps": 0.3, "min_samples": 2}
CONFIGURED = ("cluster.auto=false", "cluster.k1=10", "cluster.k2=3", "cluster.eps=0.3",
              "cluster.min_samples=2")
WIDTHS = ("camera.k1_intra=4", "camera.k1_inter=8", "camera.k2_intra=2", "camera.k2_inter=3")


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("jaccard", ["plain", "camera_aware"])
@pytest.mark.parametrize("epoch", [0, 1])
def test_configured_knobs_give_the_labels_of_before(method, jaccard, epoch) -> None:
    feats, _, cams = camera_planted(20, 2, camera=0.3)
    feats = torch.from_numpy(feats)
    out = labels_of(METHODS[method], feats, cams, epoch, *CONFIGURED,
                    f"cluster.jaccard={jaccard}", *WIDTHS)
    clustered = standardize_per_camera(feats, cams) if "standardised" in method else feats
    camera = None if jaccard == "plain" else CameraJaccard(
        cams, k1_intra=4, k1_inter=8, k2_intra=3 if epoch == 0 else 2,
        k2_inter=3)
    before = jaccard_dbscan(clustered, **KNOBS, knn="auto", camera=camera)
    assert out.labels.tolist() == before.tolist()
    assert "auto" not in out.info
    assert out.num_classes >= 2 and (before >= 0).any() and (before < 0).any()


@pytest.mark.parametrize("jaccard", ["plain", "camera_aware"])
def test_configured_class_count_is_the_estimate_of_before(jaccard) -> None:
    feats, _, cams = camera_planted(20, 2, camera=0.3)
    feats = torch.from_numpy(feats)
    inputs = LabelInputs(features=feats, camids=cams, has_cameras=True, epoch=1)
    camera = None if jaccard == "plain" else CameraJaccard(cams, k1_intra=4, k1_inter=8,
                                                           k2_intra=2, k2_inter=3)
    for k1 in (10, 200):  # 200 > N: lowered to fit, as estimate_num_classes does
        method = build_method(cfg("method.name=rsl", "cluster.num_classes=0", *CONFIGURED,
                                  f"cluster.k1={k1}", f"cluster.jaccard={jaccard}", *WIDTHS))
        before = estimate_num_classes(feats, **{**KNOBS, "k1": k1}, minimum=2, camera=camera)
        assert method.num_classes_for(inputs) == (before, True)


def test_configured_labels_of_a_hand_made_case() -> None:
    # the world above: plain (k1 4) finds each person's two views apart, camera-aware
    # (widths 3, 3, 1, 1) the people, for every density method
    plain = (np.repeat(np.arange(PEOPLE), 2 * PER_VIEW) * 2
             + np.tile(np.repeat([0, 1], PER_VIEW), PEOPLE)).tolist()
    people = np.repeat(np.arange(PEOPLE), 2 * PER_VIEW).tolist()
    knobs = ("cluster.auto=false", "cluster.k1=4", "cluster.k2=1", "cluster.eps=0.5",
             "cluster.min_samples=2", *NARROW)
    for method in ("cluster_contrast", "sfe_cr", "cap"):
        args = METHODS[method]
        assert labels_of(args, two_views(), CAMS, 1, *knobs).labels.tolist() == plain
        assert labels_of(args, two_views(), CAMS, 1, *knobs,
                         "cluster.jaccard=camera_aware").labels.tolist() == people


@pytest.mark.parametrize("jaccard", ["plain", "camera_aware"])
def test_sfe_cr_local_clusters_take_the_chosen_plain_k1(monkeypatch, jaccard) -> None:
    import unreid.methods.sfe_cr as sfe_cr

    seen: list[tuple[int, int]] = []
    real = sfe_cr.camera_local_clusters
    monkeypatch.setattr(sfe_cr, "camera_local_clusters",
                        lambda *a, k1, k2, **kw: seen.append((k1, k2)) or real(*a, k1=k1, k2=k2,
                                                                              **kw))
    x = two_views()
    out = labels_of(("method.name=sfe_cr", "method.sfe=false"), x, CAMS, 1, "cluster.auto=true",
                    f"cluster.jaccard={jaccard}", *NARROW)
    auto = out.info["auto"]
    assert seen == [(auto["k1"], auto["k2"])]
    if jaccard == "camera_aware":  # no plain graph was chosen: the camera-blind rule's k1
        rule = auto_cluster_params(x)
        assert seen == [(rule.k1, rule.k2)]
