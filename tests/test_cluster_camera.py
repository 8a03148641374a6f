"""Per-camera clusters and camera-aware re-allocation (SFE-CR eqs. 4-5): the paper's Fig. 4
case, hand cases, properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from unreid.cluster import camera_local_clusters, jaccard_dbscan, reallocate_camera_clusters
from unreid.errors import ClusteringError


def reference(g, loc, cam, delta):
    """Textbook loop over local clusters (the rule as the docstring states it)."""
    g, loc, cam = (np.asarray(a, dtype=np.int64) for a in (g, loc, cam))
    out = g.copy()
    for c, l in {(int(c), int(l)) for c, l in zip(cam, loc) if l >= 0}:
        members = np.flatnonzero((cam == c) & (loc == l))
        ids, counts = np.unique(g[members][g[members] >= 0], return_counts=True)
        if len(ids) == 0:
            continue
        best = ids[np.argmax(counts)]  # np.unique sorts ids: argmax takes the smallest on ties
        if counts.max() / len(members) >= delta:
            out[members] = best
    return out


# Paper Fig. 4: one camera's local cluster of 5 samples, 4 of them in global cluster 0.
FIG4_LOCAL = np.array([0, 0, 0, 0, 0, -1, -1])
FIG4_CAM = np.zeros(7, dtype=np.int64)


@pytest.mark.parametrize("fifth", [-1, 1])  # the 5th sample: a global outlier, or in cluster 1
def test_reallocate_fig4_moves_fifth_sample_at_delta_080_not_085(fifth):
    g = np.array([0, 0, 0, 0, fifth, 1, 0])
    moved = reallocate_camera_clusters(g, FIG4_LOCAL, FIG4_CAM, delta=0.8)
    assert moved.tolist() == [0, 0, 0, 0, 0, 1, 0]
    kept = reallocate_camera_clusters(g, FIG4_LOCAL, FIG4_CAM, delta=0.85)
    assert kept.tolist() == g.tolist()
    assert reallocate_camera_clusters(g, FIG4_LOCAL, FIG4_CAM).tolist() == g.tolist()  # default


def test_reallocate_treats_local_labels_per_camera():
    # Local label 0 is used by camera 0 (samples 0-2) and by camera 1 (samples 3-5).
    g = np.array([4, 4, -1, 7, 7, 2])
    loc = np.array([0, 0, 0, 0, 0, 0])
    cam = np.array([0, 0, 0, 1, 1, 1])
    out = reallocate_camera_clusters(g, loc, cam, delta=0.6)
    assert out.tolist() == [4, 4, 4, 7, 7, 7]
    # Pooled into one cluster of 6 the best overlap would be 2/6 and nothing would move.
    assert reallocate_camera_clusters(g, loc, np.zeros(6, np.int64), 0.6).tolist() == g.tolist()


def test_reallocate_ties_go_to_smallest_global_id_and_outliers_are_no_target():
    g = np.array([5, 5, 3, 3, -1, -1, -1, 9])
    loc = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    cam = np.zeros(8, dtype=np.int64)
    out = reallocate_camera_clusters(g, loc, cam, delta=0.5)
    # cluster 0: 2/4 in 5 and in 3 -> 3; cluster 1: three global outliers, one in 9 -> 1/4 < 0.5
    assert out.tolist() == [3, 3, 3, 3, -1, -1, -1, 9]
    # all of local cluster 1 outliers but one: at delta 0.25 the single member decides
    out = reallocate_camera_clusters(g, loc, cam, delta=0.25)
    assert out.tolist() == [3, 3, 3, 3, 9, 9, 9, 9]


def test_reallocate_leaves_local_outliers_and_pure_outlier_clusters_alone():
    g = np.array([1, 1, 1, -1, -1, -1, 2])
    loc = np.array([0, 0, -1, 1, 1, -1, -1])
    cam = np.array([0, 0, 0, 0, 0, 1, 1])
    out = reallocate_camera_clusters(g, loc, cam, delta=0.1)
    assert out.tolist() == g.tolist()
    assert out.dtype == np.int64


def test_reallocate_delta_above_one_is_identity_and_bad_delta_raises():
    g = np.array([0, 0, -1, 1])
    loc = np.array([0, 0, 0, 0])
    cam = np.zeros(4, dtype=np.int64)
    assert reallocate_camera_clusters(g, loc, cam, delta=1.01).tolist() == g.tolist()
    assert reallocate_camera_clusters(g, loc, cam, delta=0.5).tolist() == [0, 0, 0, 0]
    for bad in (0.0, -0.5, float("nan")):
        with pytest.raises(ClusteringError, match="cluster.delta"):
            reallocate_camera_clusters(g, loc, cam, delta=bad)


def test_reallocate_rejects_mismatched_or_non_integer_inputs():
    with pytest.raises(ClusteringError, match="same length"):
        reallocate_camera_clusters(np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(3, int))
    with pytest.raises(ClusteringError, match="integer"):
        reallocate_camera_clusters(np.zeros(3), np.zeros(3, np.int64), np.zeros(3, np.int64))


def test_reallocate_empty_input_returns_empty():
    e = np.zeros(0, dtype=np.int64)
    assert reallocate_camera_clusters(e, e, e).shape == (0,)


label_sets = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-1, 4), min_size=n, max_size=n),
        st.lists(st.integers(-1, 3), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(labels=label_sets, delta=st.sampled_from([0.3, 0.5, 0.6, 2 / 3, 0.75, 0.8, 0.85, 1.0]))
def test_reallocate_matches_reference_and_its_properties(labels, delta):
    g, loc, cam = (np.array(a, dtype=np.int64) for a in labels)
    out = reallocate_camera_clusters(g, loc, cam, delta)
    assert out.tolist() == reference(g, loc, cam, delta).tolist()
    changed = out != g
    # Only samples of local clusters change, never to -1, and only into a G holding >= delta
    # of their local cluster.
    assert np.all(loc[changed] >= 0) and np.all(out[changed] >= 0)
    for i in np.flatnonzero(changed):
        members = (cam == cam[i]) & (loc == loc[i])
        assert np.mean(g[members] == out[i]) >= delta
    # A global cluster member keeps a label unless its whole local cluster moves.
    assert np.all(out[g >= 0] >= 0)
    # Idempotent, and invariant to renumbering local clusters inside a camera.
    assert reallocate_camera_clusters(out, loc, cam, delta).tolist() == out.tolist()
    renum = np.where(loc >= 0, (loc + 3 * cam + 1) % 7 + 10 * cam, -1)
    assert reallocate_camera_clusters(g, renum, cam, delta).tolist() == out.tolist()
    assert reallocate_camera_clusters(g, loc, cam, delta + 1.0).tolist() == g.tolist()


# ---------------------------------------------------------------- per-camera clusters

E = torch.eye(4)
# camera 0: two people interleaved (e1, e0), 3 images each; camera 1: 3 images of e2 and
# one of e3; camera 2: a single image; camera 5: three different people.
LOCAL_CAMS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 5, 5, 5])
LOCAL_FEATS = E[[1, 0, 1, 0, 1, 0, 2, 3, 2, 2, 0, 0, 1, 2]]


def test_camera_local_clusters_numbers_each_camera_from_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cameras without a cluster are counted, not warned
        labels, info = camera_local_clusters(
            LOCAL_FEATS, LOCAL_CAMS, k1=3, k2=1, eps=0.5, min_samples=2
        )
    assert labels.tolist() == [0, 1, 0, 1, 0, 1, 0, -1, 0, 0, -1, -1, -1, -1]
    assert labels.dtype == np.int64
    assert info == {
        "local_clusters": 3,  # two in camera 0, one in camera 1
        "local_outliers": 5,
        "cameras_without_local_clusters": 2,  # camera 2 (one image) and camera 5
    }


def test_camera_local_clusters_skip_cameras_below_min_samples() -> None:
    labels, info = camera_local_clusters(
        LOCAL_FEATS, LOCAL_CAMS, k1=3, k2=1, eps=0.5, min_samples=5
    )
    # camera 0 (6 images) is clustered but has no core sample; cameras 1, 2, 5 are too small
    assert (labels == -1).all()
    assert info["cameras_without_local_clusters"] == 4 and info["local_clusters"] == 0


def test_camera_local_clusters_lower_k_to_each_camera_size() -> None:
    labels, _ = camera_local_clusters(LOCAL_FEATS, LOCAL_CAMS, k1=30, k2=6, eps=0.5,
                                      min_samples=2)
    for cam, n in ((0, 6), (1, 4), (5, 3)):
        rows = np.flatnonzero(np.equal(LOCAL_CAMS, cam))
        alone = jaccard_dbscan(LOCAL_FEATS[rows], k1=n, k2=min(6, n), eps=0.5, min_samples=2,
                               warn=False)
        assert labels[rows].tolist() == alone.tolist()


def test_camera_local_clusters_equal_one_run_per_camera_on_random_features() -> None:
    gen = torch.Generator().manual_seed(1)
    centres = F.normalize(torch.randn(4, 8, generator=gen), dim=1)
    x = F.normalize(centres.repeat_interleave(12, 0) + 0.3 * torch.randn(48, 8, generator=gen),
                    dim=1)
    cams = torch.randint(0, 3, (48,), generator=gen).numpy()
    labels, info = camera_local_clusters(x, cams, k1=6, k2=2, eps=0.6, min_samples=3)
    total = 0
    for cam in range(3):
        rows = np.flatnonzero(cams == cam)
        alone = jaccard_dbscan(x[rows], k1=6, k2=2, eps=0.6, min_samples=3, warn=False)
        assert labels[rows].tolist() == alone.tolist()
        total += len(set(alone.tolist()) - {-1})
    assert info["local_clusters"] == total
    assert info["local_outliers"] == int((labels < 0).sum())


def test_camera_local_clusters_need_one_camera_per_row() -> None:
    with pytest.raises(ClusteringError, match="14 features but 3 camera ids"):
        camera_local_clusters(LOCAL_FEATS, np.zeros(3, dtype=np.int64), k1=3, k2=1, eps=0.5,
                              min_samples=2)


def test_standardize_per_camera_exact_values() -> None:
    import torch
    import torch.nn.functional as F

    from unreid.cluster import standardize_per_camera

    x = torch.tensor([[3.0, 4.0], [4.0, 3.0], [0.0, 2.0], [2.0, 0.0], [1.0, 1.0]])
    cams = np.array([0, 0, 1, 1, 2])
    out = standardize_per_camera(x, cams)
    # camera 0: unit rows (0.6, 0.8), (0.8, 0.6), mean (0.7, 0.7), centred (-+0.1, +-0.1),
    # spread sqrt(0.02); camera 1: (0, 1), (1, 0), centred (-+0.5, +-0.5), spread sqrt(0.5)
    h = 0.5**0.5
    want = torch.tensor([[-h, h], [h, -h], [-h, h], [h, -h]])
    torch.testing.assert_close(out[:4], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[4], F.normalize(x[4], dim=0))  # a one-image camera
    # per dimension: each coordinate divided by its own spread (0.1 and 0.5 here)
    per_dim = standardize_per_camera(x, cams, per_dimension=True)
    torch.testing.assert_close(per_dim[:4], want / h, atol=1e-4, rtol=0)
