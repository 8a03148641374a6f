"""cluster.auto: Jaccard + DBSCAN knobs chosen from planted clusters of known size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import camera_planted

from unreid.cluster import auto_cluster_params, jaccard_dbscan, label_quality
from unreid.cluster.auto import (
    CLEAR_GAP,
    K1_CHOICES,
    MIN_K1,
    SMALL_SET_SHARE,
    balanced_clusters,
    estimate_images_per_id,
    k2_for,
    similarity_gap,
)
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


@pytest.mark.parametrize("per_id", [2, 4, 8, 16, 24, 32])
def test_auto_recovers_planted_identities_at_every_size(per_id: int) -> None:
    feats, pids = planted(30 if per_id <= 16 else 12, per_id)
    ids = len(np.unique(pids))
    choice = auto_cluster_params(feats)
    labels = jaccard_dbscan(feats, **choice.params())
    q = label_quality(labels, pids, np.zeros_like(pids))
    assert q["num_clusters"] == ids and q["num_outliers"] == 0 and q["ari"] == 1.0
    assert choice.num_clusters == ids and choice.outlier_share == 0.0
    assert choice.images_per_cluster == pytest.approx(per_id)
    assert choice.images_per_id == estimate_images_per_id(feats) == per_id
    assert choice.gap_clarity >= CLEAR_GAP  # clean clusters: the estimate alone sets k1
    # the smallest k1 choice holding one person's images
    assert choice.k1 == min((k for k in (5, 10, 15, 20, 30) if k >= per_id), default=30)
    assert choice.min_samples <= max(2, per_id)
    assert f"~{per_id} images per identity" in choice.reason and "clear" in choice.reason
    assert f"most clusters ({ids}, 0 % outliers)" in choice.reason


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


def test_auto_prefers_the_smaller_eps_and_min_samples_on_ties() -> None:
    feats, _ = planted(10, 4)
    choice = auto_cluster_params(feats, k1_choices=(10, 5), eps_choices=(0.6, 0.5),
                                 min_samples_choices=(3, 2))
    # one graph, at the smallest k1 holding the 4 images; every (eps, min_samples) gives
    # the 10 clusters without outliers here: the smallest wins
    assert (choice.k1, choice.k2, choice.eps, choice.min_samples) == (5, 2, 0.5, 2)
    assert choice.candidates == 4


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
    again = auto_cluster_params(feats)
    assert a.k1 <= 6 and a == again and np.array_equal(a.labels, again.labels)
    record = a.as_dict()
    assert set(record) == {"k1", "k2", "eps", "min_samples", "num_clusters",
                           "outlier_share", "images_per_cluster", "candidates",
                           "images_per_id", "gap_clarity", "reason", "jaccard",
                           "camera_widths"}
    assert json.loads(json.dumps(record)) == record  # the labels stay out of the record
    assert (record["jaccard"], record["camera_widths"]) == ("plain", None)


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


def weak_planted(ids: int, per_id: int, *, seed: int = 0):
    """Planted identities that features barely separate, with near-duplicate pairs inside
    each: every identity is ``per_id / 2`` tight pairs (two frames of one moment) spread
    around a weak identity centre, in 64 dimensions, the way ImageNet features see unseen
    people. Returns (features (ids * per_id, 64), identity (ids * per_id,))."""
    rng = np.random.default_rng(seed)
    dim = 64
    centres = rng.normal(size=(ids, dim))
    moments = np.repeat(centres, per_id // 2, axis=0) + 0.7 * rng.normal(
        size=(ids * per_id // 2, dim))
    feats = np.repeat(moments, 2, axis=0) + 0.5 * rng.normal(size=(ids * per_id, dim))
    return feats.astype(np.float32), np.repeat(np.arange(ids), per_id)


def test_vague_gap_keeps_k1_at_the_floor_and_off_the_fragments() -> None:
    # 32 images per identity that the features barely separate: the gap says "pairs"
    feats, pids = weak_planted(12, 32)
    per_id, clarity = similarity_gap(feats)
    assert per_id <= 3 and clarity < CLEAR_GAP
    choice = auto_cluster_params(feats)
    assert choice.k1 == MIN_K1 == 15 and "vague" in choice.reason
    auto = label_quality(jaccard_dbscan(feats, **choice.params()), pids, np.zeros_like(pids))
    # what the old rule did (k1 5, most clusters): near-duplicate pairs, a fragment of a
    # person each; the floor finds larger pieces of people and a better ARI
    old = auto_cluster_params(feats, k1_choices=(5,), min_k1=1)
    frag = label_quality(jaccard_dbscan(feats, **old.params()), pids, np.zeros_like(pids))
    assert old.images_per_cluster < choice.images_per_cluster
    assert frag["ari"] < auto["ari"]


def test_vague_gap_floor_shrinks_on_tiny_sets() -> None:
    # 48 samples: a 15-neighbour set would be a third of them, many people
    feats, _ = weak_planted(6, 8)
    choice = auto_cluster_params(feats)
    assert choice.gap_clarity < CLEAR_GAP
    floor = max(48 // SMALL_SET_SHARE, choice.images_per_id)
    assert choice.k1 == min(k for k in K1_CHOICES if k >= floor) < MIN_K1


def test_similarity_gap_is_clear_on_clean_clusters_and_vague_on_noise() -> None:
    feats, _ = planted(20, 8)
    assert similarity_gap(feats) == (8, pytest.approx(similarity_gap(feats)[1]))
    assert similarity_gap(feats)[1] >= 10
    rng = np.random.default_rng(0)
    per_id, clarity = similarity_gap(rng.normal(size=(300, 64)).astype(np.float32))
    assert per_id <= 3 and 1.0 <= clarity < 2.0
    assert similarity_gap(np.eye(3, dtype=np.float32)) == (2, 1.0)


def test_balanced_clusters_counts_clusters_that_several_cameras_see_evenly() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, -1, 3, 3, 4, 4, 4])
    cams = np.array([0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 7, 1, 0, 0, 1])
    # 0: 2 + 2 (a person); 1: one camera (near duplicates); 2: 4 + 1 (lookalikes of one
    # camera merged in); 3: 1 + 1 with any camera ids; 4: 2 + 1 (half is enough)
    assert balanced_clusters(labels, cams) == 3
    assert balanced_clusters(labels, np.zeros_like(cams)) == 0
    assert balanced_clusters(np.full(4, -1), np.arange(4)) == 0


@pytest.mark.parametrize(("ids", "per_camera", "camera", "k1"),
                         [(60, 2, 0.0, 20), (20, 16, 0.3, 30)])
def test_cameras_choose_the_graph_whose_clusters_span_them(ids, per_camera, camera, k1) -> None:
    feats, pids, cams = camera_planted(ids, per_camera, camera=camera)
    blind = auto_cluster_params(feats)
    seen = auto_cluster_params(feats, camids=cams)
    assert blind.gap_clarity < CLEAR_GAP and blind.k1 == MIN_K1
    assert seen.k1 == k1 and seen.k2 == k2_for(k1) and seen.candidates > blind.candidates
    assert f"k1 {k1} of 5 graphs: most camera-balanced clusters ({ids})" in seen.reason
    q_blind = label_quality(jaccard_dbscan(feats, **blind.params()), pids, cams)
    q_seen = label_quality(jaccard_dbscan(feats, **seen.params()), pids, cams)
    # the 15-neighbour floor cuts people into pieces (or merges pairs of moments); the
    # graph whose clusters span both cameras holds every person, whole
    assert q_seen["ari"] == 1.0 and q_seen["num_clusters"] == ids
    assert q_blind["ari"] < 0.9


def test_cameras_that_never_share_a_cluster_keep_the_camera_blind_choice() -> None:
    # a strong camera offset: every cluster on every graph lies in one camera
    feats, _, cams = camera_planted(20, 16, camera=0.6)
    blind = auto_cluster_params(feats)
    seen = auto_cluster_params(feats, camids=cams)
    assert blind.params() == seen.params() and blind.num_clusters == seen.num_clusters
    assert "no camera-balanced cluster on any graph" in seen.reason


def test_one_camera_or_none_is_the_camera_blind_rule() -> None:
    feats, _, cams = camera_planted(10, 4, camera=0.0)
    blind = auto_cluster_params(feats)
    assert auto_cluster_params(feats, camids=np.zeros_like(cams)) == blind
    assert auto_cluster_params(feats, camids=None) == blind
    with pytest.raises(ClusteringError, match="79 camera ids for 80 samples"):
        auto_cluster_params(feats, camids=cams[:-1])


def test_methods_pass_their_camera_ids_to_the_choice() -> None:
    from unreid.config import Config
    from unreid.methods.common import density_labels

    feats, _, cams = camera_planted(60, 2, camera=0.0)
    cfg = Config()
    cfg.cluster.auto = True
    labels, params, info = density_labels(cfg, feats, cams, 1)
    assert params["k1"] == 20 and "camera-balanced" in info["auto"]["reason"]
    assert np.array_equal(labels, auto_cluster_params(feats, camids=cams).labels)
    # one camera (what camera_ids gives without camera labels): the camera-blind rule
    assert density_labels(cfg, feats, np.zeros_like(cams), 1)[1]["k1"] == MIN_K1


def _searches(monkeypatch) -> list[int]:
    """Count every kNN search (its depth) that auto_cluster_params runs, whichever module
    starts it: the shared search, a graph's own, the similarity gap's."""
    import importlib

    knn_module = importlib.import_module("unreid.cluster.knn")
    real = knn_module.neighbours
    depths: list[int] = []

    def counted(x, inv_norm, k, **kwargs):
        depths.append(int(k))
        return real(x, inv_norm, k, **kwargs)

    for target in (knn_module, "unreid.cluster.jaccard", "unreid.cluster.auto"):
        module = importlib.import_module(target) if isinstance(target, str) else target
        name = "neighbours" if module is knn_module else "search_neighbours"
        monkeypatch.setattr(module, name, counted)
    return depths


def _separate_searches(monkeypatch) -> None:
    """Make auto_cluster_params work as before the shared search: no shared lists, every
    graph and the similarity gap search for themselves."""
    import unreid.cluster.auto as auto_module

    monkeypatch.setattr(auto_module, "_shared_neighbours", lambda *a: None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("ids", "per_camera", "camera", "cameras"),
                         [(60, 2, 0.0, True), (20, 16, 0.3, True), (20, 16, 0.6, True),
                          (12, 32, 0.0, False)])
def test_one_shared_search_chooses_exactly_what_a_search_per_graph_chose(
    monkeypatch, dtype, ids, per_camera, camera, cameras
) -> None:
    feats, _, cams = camera_planted(ids, per_camera, camera=camera)
    feats = feats.astype(dtype)
    camids = cams if cameras else None
    shared = auto_cluster_params(feats, camids=camids)
    with monkeypatch.context() as m:
        _separate_searches(m)
        depths = _searches(m)
        separate = auto_cluster_params(feats, camids=camids)
    # the gap's own search, then each graph's own
    assert depths == [41, *((5, 10, 15, 20, 30) if cameras else (shared.k1,))]
    assert separate == shared  # every field, floats included
    assert np.array_equal(separate.labels, shared.labels)


def test_the_neighbour_search_runs_once_for_all_graphs(monkeypatch) -> None:
    import unreid.cluster.auto as auto_module

    feats, _, cams = camera_planted(20, 16, camera=0.3)
    expected = auto_cluster_params(feats, camids=cams)
    graphs: list[int] = []
    real = auto_module.jaccard_distance
    monkeypatch.setattr(auto_module, "jaccard_distance",
                        lambda f, k1, *a, **kw: graphs.append(k1) or real(f, k1, *a, **kw))
    depths = _searches(monkeypatch)
    assert auto_cluster_params(feats, camids=cams) == expected
    # one search, as deep as the gap (40 + self) and the deepest graph (30) read
    assert depths == [41] and graphs == list(K1_CHOICES)
    # a tiny set: the depth is capped at N
    depths.clear()
    tiny, _ = planted(3, 2)
    auto_cluster_params(tiny)
    assert depths == [6]


def test_similarity_gap_reads_given_lists_as_its_own_search() -> None:
    from unreid.cluster import knn

    feats, _ = planted(20, 8)
    assert similarity_gap(feats, neighbours=knn(feats, 60)) == similarity_gap(feats)
    assert similarity_gap(feats, 10, neighbours=knn(feats, 11)) == similarity_gap(feats, 10)
    with pytest.raises(ClusteringError, match="similarity_gap: the neighbour lists hold 30"):
        similarity_gap(feats, neighbours=knn(feats, 30))


def test_approximate_graph_searches_are_not_shared(monkeypatch) -> None:
    pytest.importorskip("faiss")
    import importlib

    # search="auto" turns approximate from APPROX_FROM samples on: lowered to this set
    monkeypatch.setattr(importlib.import_module("unreid.cluster.knn"), "APPROX_FROM", 100)
    feats, _, cams = camera_planted(20, 16, camera=0.3)
    with monkeypatch.context() as m:
        _separate_searches(m)
        separate = auto_cluster_params(feats, camids=cams)
    depths = _searches(monkeypatch)
    assert auto_cluster_params(feats, camids=cams) == separate
    # the gap's exact search, each graph's own approximate one (whose answer depends on
    # the depth searched)
    assert depths == [41, 5, 10, 15, 20, 30]


def test_graphs_tied_at_their_k1th_place_search_for_themselves(monkeypatch) -> None:
    # Every sample four times (duplicate images): in each row the copies of a neighbour
    # are tied, across the k1-th place for k1 5, 10, 15 and 30 (groups of 4 from place 1
    # on) but not 20. faiss's flat index (float32 on the CPU) keeps tied members of its
    # own choosing there, so those graphs search for themselves, as before.
    feats, _, cams = camera_planted(20, 4, camera=0.3)
    feats, cams = np.repeat(feats, 4, axis=0), np.repeat(cams, 4)
    with monkeypatch.context() as m:
        _separate_searches(m)
        separate = auto_cluster_params(feats, camids=cams)
    depths = _searches(monkeypatch)
    assert auto_cluster_params(feats, camids=cams) == separate
    assert depths == [41, 5, 10, 15, 30]
