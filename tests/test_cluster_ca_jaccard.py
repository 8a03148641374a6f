"""Camera-aware Jaccard distance: sparse result equal to a dense textbook reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unreid.cluster import ca_jaccard_distance, jaccard_distance
from unreid.errors import ClusteringError


def dense_reference(feats: np.ndarray, cams: np.ndarray, k1_intra: int, k1_inter: int,
                    k2_intra: int, k2_inter: int) -> np.ndarray:
    """CA-Jaccard written the dense way: N x N distances, masked rankings, loops."""
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    n = len(x)
    sim = x @ x.T
    dist = 2.0 - 2.0 * sim
    same = cams[:, None] == cams[None, :]

    def ranking(allowed: np.ndarray, with_self: bool) -> list[np.ndarray]:
        out = []
        for i in range(n):
            cand = [j for j in range(n) if allowed[i, j] and j != i]
            cand.sort(key=lambda j: (-sim[i, j], j))
            out.append(np.array(([i] if with_self else []) + cand, dtype=np.int64))
        return out

    intra, inter = ranking(same, True), ranking(~same, False)

    def reciprocal(lists: list[np.ndarray], i: int, width: int) -> set[int]:
        return {int(j) for j in lists[i][:width] if i in lists[j][:width]}

    v = np.zeros((n, n))
    for i in range(n):
        nn = sorted(reciprocal(intra, i, k1_intra + 1) | reciprocal(inter, i, k1_inter + 1))
        w = np.exp(-np.maximum(dist[i, nn], 0.0))
        v[i, nn] = w / w.sum()
    vq = np.zeros_like(v)
    for i in range(n):
        rows = list(intra[i][:k2_intra]) + list(inter[i][:k2_inter])
        vq[i] = v[rows].mean(axis=0)
    out = np.zeros((n, n))
    for i in range(n):
        s = np.minimum(vq[i][None, :], vq).sum(axis=1)
        out[i] = 1.0 - s / (2.0 - s)
    return np.maximum(out, 0.0)


def densify(dist) -> np.ndarray:
    """Missing entries of the sparse result are distance 1."""
    out = np.ones(dist.shape)
    coo = dist.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


def random_world(seed: int, n: int = 40, cams: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 8, n)
    cam = rng.integers(0, cams, n)
    centres = rng.normal(size=(8, 16))
    offsets = rng.normal(size=(cams, 16))
    feats = centres[ids] + 0.8 * offsets[cam] + 0.5 * rng.normal(size=(n, 16))
    return feats, cam


@pytest.mark.parametrize("seed,k", [(0, (5, 20, 2, 4)), (1, (3, 6, 1, 2)), (2, (2, 4, 3, 3))])
def test_ca_jaccard_equals_the_dense_reference(seed: int, k: tuple[int, ...]) -> None:
    feats, cams = random_world(seed)
    got = ca_jaccard_distance(feats, cams, k1_intra=k[0], k1_inter=k[1], k2_intra=k[2],
                              k2_inter=k[3])
    want = dense_reference(feats, cams, *k)
    np.testing.assert_allclose(densify(got), want, atol=1e-6)
    assert got.has_sorted_indices and (got.diagonal() == 0).all()
    assert got.nnz == int((want < 1 - 1e-12).sum())
    # the cutoff keeps exactly the pairs at or below it
    cut = ca_jaccard_distance(feats, cams, k1_intra=k[0], k1_inter=k[1], k2_intra=k[2],
                              k2_inter=k[3], cutoff=0.6).tocoo()
    kept = set(zip(cut.row.tolist(), cut.col.tolist(), strict=True))
    assert kept == {(int(i), int(j)) for i, j in zip(*np.nonzero(want <= 0.6), strict=True)}


def test_inter_camera_neighbours_link_a_person_across_a_camera_shift() -> None:
    """Two cameras add different large offsets: in the global ranking a sample's 3
    same-camera look-alikes outrank its own identity in the other camera, so the plain
    Jaccard distance (k1 = 4) links nothing across cameras; the inter-camera ranking finds
    the other view first and CA-Jaccard links every person's two views."""
    e = np.eye(8)
    feats, cams, ids = [], [], []
    for c, shift in ((0, 3.0 * e[6]), (1, 3.0 * e[7])):
        for person in range(4):
            for j in range(2):
                feats.append(e[person] + shift + 0.01 * (j + 1) * e[(person + 1) % 4])
                cams.append(c)
                ids.append(person)
    feats, cams, ids = np.array(feats), np.array(cams), np.array(ids)
    cross = cams[:, None] != cams[None, :]
    same_id = ids[:, None] == ids[None, :]
    plain = densify(jaccard_distance(feats, k1=4, k2=1))
    ca = densify(ca_jaccard_distance(feats, cams, k1_intra=1, k1_inter=1, k2_intra=1,
                                     k2_inter=0))
    assert (plain[cross] == 1).all()
    assert (ca[cross & same_id] < 1).all() and (ca[cross & ~same_id] == 1).all()


def test_one_camera_gives_reciprocal_sets_without_expansion() -> None:
    feats, _ = random_world(3, n=20)
    cams = np.zeros(20, dtype=np.int64)
    got = ca_jaccard_distance(feats, cams, k1_intra=4, k1_inter=20, k2_intra=2, k2_inter=4)
    want = dense_reference(feats, cams, 4, 20, 2, 4)
    np.testing.assert_allclose(densify(got), want, atol=1e-6)


def test_bad_input_is_one_clear_error() -> None:
    feats, cams = random_world(0, n=10)
    with pytest.raises(ClusteringError, match="camids must be 10 integers"):
        ca_jaccard_distance(feats, cams[:5])
    with pytest.raises(ClusteringError, match="k2_intra=0"):
        ca_jaccard_distance(feats, cams, k2_intra=0)
    with pytest.raises(ClusteringError, match="cutoff"):
        ca_jaccard_distance(torch.as_tensor(feats), cams, cutoff=1.5)
