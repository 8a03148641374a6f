"""Cross-camera association: the nearest proxy per other camera, the gate, link precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.cluster import associate_proxies, link_precision


def world():
    """Proxies: camera 0 holds A0 (id 0) and B0 (id 1); camera 1 holds A1 (id 2, the same
    person as A0 under another pseudo-label) and C1 (id 3); camera 2 holds B2 (id 1).

    A0 and A1 are each other's nearest across cameras 0/1; C1's nearest in camera 0 is
    A0 as well (C1 is closer to A0 than to B0), but A0's nearest in camera 1 is A1.
    """
    proxies = F.normalize(torch.tensor([
        [1.0, 0.0, 0.0, 0.0],   # 0: A0, cam 0, id 0
        [0.0, 1.0, 0.0, 0.0],   # 1: B0, cam 0, id 1
        [0.9, 0.0, 0.3, 0.0],   # 2: A1, cam 1, id 2
        [0.5, 0.0, 0.0, 0.8],   # 3: C1, cam 1, id 3
        [0.1, 1.0, 0.0, 0.0],   # 4: B2, cam 2, id 1
    ]), dim=1)
    labels = np.array([0, 1, 2, 3, 1])
    cams = np.array([0, 0, 1, 1, 2])
    return proxies, labels, cams


def test_mutual_gate_keeps_mutual_nearest_proxies_only() -> None:
    proxies, labels, cams = world()
    # sample 0: of A0, looks like A0; sample 1: of C1 (camera 1); sample 2: of B0
    feats = torch.stack([proxies[0], proxies[3], proxies[1]])
    own = np.array([0, 3, 1])
    links = associate_proxies(feats, own, proxies, labels, cams, mutual=True)
    # sample 0 -> A1 (mutual); -> camera 2's nearest is B2, whose nearest in camera 0 is B0: no.
    # sample 1 -> A0 in camera 0, but A0's nearest in camera 1 is A1, not C1: no;
    #   camera 2's B2 -> nearest in camera 1 is A1 (0.09 > 0.06 with C1): no.
    # sample 2 -> B2 is identity 1 = B0's own: never a link; camera 1's nearest A1 is not
    #   mutual (A1's nearest in camera 0 is A0).
    assert links.sample.tolist() == [0] and links.proxy.tolist() == [2]
    np.testing.assert_allclose(links.similarity, [float(proxies[0] @ proxies[2])], rtol=1e-6)


def test_without_mutual_gate_every_other_camera_gives_at_most_one_link() -> None:
    proxies, labels, cams = world()
    feats = torch.stack([proxies[0], proxies[3], proxies[1]])
    own = np.array([0, 3, 1])
    links = associate_proxies(feats, own, proxies, labels, cams, mutual=False)
    pairs = list(zip(links.sample.tolist(), links.proxy.tolist(), strict=True))
    # sample 0: A1 (camera 1), B2 (camera 2); sample 1: A0 (camera 0), B2 (camera 2);
    # sample 2: A1 (camera 1) but not B2, its own identity
    assert pairs == [(0, 2), (0, 4), (1, 0), (1, 4), (2, 2)]
    per_sample = np.bincount(links.sample, minlength=3)
    assert (per_sample <= len(np.unique(cams)) - 1).all()


def test_similarity_threshold_gate() -> None:
    proxies, labels, cams = world()
    feats = torch.stack([proxies[0], proxies[3], proxies[1]])
    own = np.array([0, 3, 1])
    links = associate_proxies(feats, own, proxies, labels, cams, mutual=False,
                              min_similarity=0.5)
    sims = (feats @ proxies.t()).numpy()
    assert list(zip(links.sample.tolist(), links.proxy.tolist(), strict=True)) == [(0, 2), (1, 0)]
    assert (sims[links.sample, links.proxy] >= 0.5).all()
    both = associate_proxies(feats, own, proxies, labels, cams, mutual=True, min_similarity=0.99)
    assert len(both) == 0  # A0-A1 is mutual but only 0.95 similar


def test_margin_gate_wants_a_distinct_nearest_proxy_in_the_other_camera() -> None:
    proxies, labels, cams = world()
    feats = torch.stack([proxies[0], proxies[3], proxies[1]])
    own = np.array([0, 3, 1])
    # Candidates (similarity, runner-up of that camera): sample 0 -> A1 (0.949; C1 0.530),
    # -> B2 (0.100; camera 2 has no runner-up); sample 1 -> A0 (0.530; B0 0.000),
    # -> B2 (0.053; none); sample 2 -> A1 (0.000; C1 0.000: a tie, margin 0).
    pairs = {m: list(zip(*(a.tolist() for a in (links.sample, links.proxy)), strict=True))
             for m in (0.1, 0.45, 0.6)
             for links in [associate_proxies(feats, own, proxies, labels, cams, mutual=False,
                                             min_margin=m)]}
    assert pairs[0.1] == [(0, 2), (0, 4), (1, 0), (1, 4)]  # the tie fails any margin
    assert pairs[0.45] == [(0, 4), (1, 0), (1, 4)]  # A1's lead over C1 is only 0.42
    assert pairs[0.6] == [(0, 4), (1, 4)]
    # the gates combine: mutual and margin 0.4 keep A0 -> A1 only
    both = associate_proxies(feats, own, proxies, labels, cams, mutual=True, min_margin=0.4)
    assert both.sample.tolist() == [0] and both.proxy.tolist() == [2]
    for links in (both, associate_proxies(feats, own, proxies, labels, cams, mutual=False,
                                          min_margin=0.0)):
        assert np.bincount(links.sample, minlength=3).max() <= len(np.unique(cams)) - 1


def test_two_cameras_never_more_than_one_extra_positive() -> None:
    g = torch.Generator().manual_seed(0)
    proxies = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    labels = np.arange(12) % 6
    cams = np.repeat([0, 1], 6)
    feats = torch.randn(30, 8, generator=g)
    own = torch.randint(0, 12, (30,), generator=g).numpy()
    links = associate_proxies(feats, own, proxies, labels, cams, mutual=False)
    assert np.bincount(links.sample, minlength=30).max() <= 1
    assert (cams[links.proxy] != cams[own[links.sample]]).all()
    assert (labels[links.proxy] != labels[own[links.sample]]).all()
    mask = links.mask(30, 12)
    assert int(mask.sum()) == len(links) and bool(mask[links.sample[0], links.proxy[0]])


def test_link_precision_against_each_proxys_majority_identity() -> None:
    proxies, labels, cams = world()
    feats = torch.stack([proxies[0], proxies[3], proxies[1]])
    own = np.array([0, 3, 1])
    links = associate_proxies(feats, own, proxies, labels, cams, mutual=False)
    # the proxies' members: proxy p holds samples with these true ids
    proxy_index = np.array([0, 0, 1, 2, 2, 2, 3, 4])
    true_pids = np.array([7, 7, 8, 7, 7, 9, 5, 8])  # A1 (proxy 2) is mostly person 7
    sample_pids = np.array([7, 5, 8])
    # links (0,2): 7 == 7 right; (0,4): 8 != 7; (1,0): 7 != 5; (1,4): 8 != 5; (2,2): 7 != 8
    assert link_precision(links, sample_pids, proxy_index, true_pids) == pytest.approx(1 / 5)
    empty = associate_proxies(feats[:0], own[:0], proxies, labels, cams)
    assert len(empty) == 0 and np.isnan(link_precision(empty, sample_pids, proxy_index,
                                                       true_pids))


def test_outlier_samples_are_refused() -> None:
    proxies, labels, cams = world()
    with pytest.raises(ValueError, match="outliers"):
        associate_proxies(proxies[:1], np.array([-1]), proxies, labels, cams)
