"""Camera-aware proxies: construction, which proxies each loss sees, the memory update."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from unreid.losses import ProxyMemory, camera_proxies, inter_camera_loss, intra_camera_loss

E = torch.eye(4)


def test_proxies_are_per_identity_and_camera_means_in_label_camera_order() -> None:
    # identity 1 in cameras 2 and 0, identity 0 in camera 0 only; sample 4 is an outlier
    feats = torch.stack([E[0], E[1], 3 * E[0], E[2], E[3], E[1] + E[2]])
    labels = np.array([1, 1, 1, 0, -1, 0])
    cams = np.array([2, 0, 2, 0, 1, 0])
    p = camera_proxies(feats, labels, cams)
    assert p.labels.tolist() == [0, 1, 1] and p.cameras.tolist() == [0, 0, 2]
    assert p.index.tolist() == [2, 1, 2, 0, -1, 0]
    # proxy 0: mean of e2 and normalize(e1 + e2), normalised; proxy 2: e0 (norms ignored)
    want0 = F.normalize(E[2] + F.normalize(E[1] + E[2], dim=0), dim=0)
    torch.testing.assert_close(p.features[0], want0)
    torch.testing.assert_close(p.features[1], E[1])
    torch.testing.assert_close(p.features[2], E[0])


def test_intra_camera_loss_sees_only_the_proxies_of_the_samples_camera() -> None:
    proxies = F.normalize(torch.tensor([[1.0, 0.2, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0],
                                        [0, 0, 1, 0]]), dim=1)
    cams = torch.tensor([0, 0, 1, 1])
    f = torch.tensor([[1.0, 0, 0, 0]])
    loss = intra_camera_loss(f, torch.tensor([0]), proxies, cams, temperature=0.1)
    # softmax over proxies 0 and 1 only; proxy 2 (camera 1, identical to f) is no negative
    s = f @ proxies.t() / 0.1
    want = -(s[0, 0] - torch.logsumexp(s[0, :2], 0))
    torch.testing.assert_close(loss, want)
    moved = proxies.clone()
    moved[2:] = F.normalize(torch.randn(2, 4), dim=1)
    torch.testing.assert_close(intra_camera_loss(f, torch.tensor([0]), moved, cams,
                                                 temperature=0.1), loss)


def test_intra_camera_loss_is_the_sum_over_cameras_of_their_mean() -> None:
    proxies = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    cams = torch.tensor([0, 0, 0, 1, 1, 1])
    f = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    idx = torch.tensor([0, 1, 3, 4, 5])
    one = [intra_camera_loss(f[i : i + 1], idx[i : i + 1], proxies, cams) for i in range(5)]
    want = (one[0] + one[1]) / 2 + (one[2] + one[3] + one[4]) / 3
    torch.testing.assert_close(intra_camera_loss(f, idx, proxies, cams), want)


def _inter_world():
    # proxies: 0 (id 0, cam 0), 1 (id 0, cam 1), 2 (id 1, cam 0), 3 (id 1, cam 1), 4 (id 2, cam 1)
    proxies = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [0.6, 0, 0.8, 0],
                                        [0, 0, 1, 0], [0.9, 0, 0, 0.436]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2])
    cams = torch.tensor([0, 1, 0, 1, 1])
    return proxies, labels, cams


def test_inter_camera_loss_soft_targets_over_identity_proxies_against_hard_negatives() -> None:
    proxies, labels, cams = _inter_world()
    f = torch.tensor([[1.0, 0, 0, 0]])
    t = 0.5
    s = (f @ proxies.t())[0] / t
    # positives {0, 1}; the 2 hardest negatives are proxies 4 (0.9) and 2 (0.6), not 3
    loss = inter_camera_loss(f, torch.tensor([0]), proxies, labels, cams, temperature=t,
                             hard_negatives=2)
    log_z = torch.logsumexp(s[[0, 1, 4, 2]], 0)
    torch.testing.assert_close(loss, log_z - (s[0] + s[1]) / 2)
    # without the own camera's proxy as a positive: P = {1}, negatives 4 and 0
    loss = inter_camera_loss(f, torch.tensor([0]), proxies, labels, cams, temperature=t,
                             hard_negatives=2, own_camera_positive=False)
    torch.testing.assert_close(loss, torch.logsumexp(s[[1, 0, 4]], 0) - s[1])


def test_inter_camera_extra_positives_leave_the_negatives() -> None:
    proxies, labels, cams = _inter_world()
    f = torch.tensor([[1.0, 0, 0, 0]])
    extra = torch.tensor([[False, False, False, False, True]])  # a link to proxy 4
    s = (f @ proxies.t())[0] / 0.5
    loss = inter_camera_loss(f, torch.tensor([0]), proxies, labels, cams, temperature=0.5,
                             hard_negatives=2, extra_positives=extra)
    # P = {0, 1, 4}; negatives: the two left, 2 and 3
    want = torch.logsumexp(s, 0) - (s[0] + s[1] + s[4]) / 3
    torch.testing.assert_close(loss, want)


def test_inter_camera_loss_skips_samples_without_positives() -> None:
    proxies, labels, cams = _inter_world()
    f = torch.tensor([[0, 0, 0, 1.0], [1.0, 0, 0, 0]])
    idx = torch.tensor([4, 0])  # proxy 4: identity 2 has no other proxy
    both = inter_camera_loss(f, idx, proxies, labels, cams, own_camera_positive=False)
    alone = inter_camera_loss(f[1:], idx[1:], proxies, labels, cams, own_camera_positive=False)
    torch.testing.assert_close(both, alone)  # camera 1's term is empty, camera 0's unchanged
    none = inter_camera_loss(f[:1], idx[:1], proxies, labels, cams, own_camera_positive=False)
    assert float(none) == 0.0


def test_inter_camera_gradient_reaches_only_positives_and_chosen_negatives() -> None:
    proxies, labels, cams = _inter_world()
    p = proxies.clone().requires_grad_(True)
    f = torch.tensor([[1.0, 0, 0, 0]])
    inter_camera_loss(f, torch.tensor([0]), p, labels, cams, hard_negatives=1).backward()
    touched = (p.grad.abs().sum(dim=1) > 0).tolist()
    assert touched == [True, True, False, False, True]


def test_proxy_memory_losses_and_momentum_update() -> None:
    feats = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0.1, 0, 0],
                                      [0, 0, 1, 0]]), dim=1)
    p = camera_proxies(feats, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    memory = ProxyMemory.from_proxies(p, temperature=0.07, momentum=0.2, hard_negatives=50)
    out = memory.losses(feats, torch.from_numpy(p.index), inter=True)
    assert set(out) == {"intra", "inter"}
    torch.testing.assert_close(out["intra"], intra_camera_loss(
        feats, torch.from_numpy(p.index), p.features, torch.from_numpy(p.cameras)))
    assert set(memory.losses(feats, torch.from_numpy(p.index), inter=False)) == {"intra"}
    new = torch.tensor([[0, 1.0, 0, 0]])
    memory.update(new, torch.tensor([0]))
    want = F.normalize(0.2 * p.features[0] + 0.8 * new[0], dim=0)
    torch.testing.assert_close(memory.centroids[0], want)
    assert math.isclose(float(memory.centroids[1:].sub(p.features[1:]).abs().max()), 0.0)
    # state round trip (what a checkpoint holds)
    other = ProxyMemory(4, p.labels, p.cameras)
    other.load_state_dict(memory.state_dict())
    torch.testing.assert_close(other.centroids, memory.centroids)
    assert other.proxy_labels.tolist() == [0, 0, 1, 1]
