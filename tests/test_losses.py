from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.losses import ClusterMemory, cross_entropy_smooth, soft_cross_entropy


def _memory(centroids, temperature=0.5, momentum=0.2):
    m = ClusterMemory(2, len(centroids), temperature=temperature, momentum=momentum)
    m.centroids = torch.tensor(centroids, dtype=torch.float32)
    return m


def test_memory_loss_and_one_update_by_hand():
    mem = _memory([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[0.6, 0.8]], requires_grad=True)
    loss = mem(f, torch.tensor([0]))
    # logits (0.6, 0.8) / 0.5 = (1.2, 1.6): -log softmax_0 = log(1 + e^0.4)
    assert loss.item() == pytest.approx(math.log1p(math.exp(0.4)), abs=1e-6)
    assert loss.item() == pytest.approx(0.913015, abs=1e-6)
    # c0 <- normalize(0.2 (1, 0) + 0.8 (0.6, 0.8)) = (0.68, 0.64) / 0.933809
    torch.testing.assert_close(
        mem.centroids, torch.tensor([[0.728200, 0.685365], [0.0, 1.0]]), atol=1e-6, rtol=0
    )


def test_memory_gradient_uses_the_centroids_before_the_update():
    mem = _memory([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[0.6, 0.8]], requires_grad=True)
    mem(f, torch.tensor([0])).backward()
    ref_f = torch.tensor([[0.6, 0.8]], requires_grad=True)
    ref = F.cross_entropy(F.normalize(ref_f, dim=1) @ torch.eye(2) / 0.5, torch.tensor([0]))
    ref.backward()
    torch.testing.assert_close(f.grad, ref_f.grad)


def test_memory_repeated_label_updates_sequentially_in_batch_order():
    mem = _memory([[1.0, 0.0], [0.0, 1.0]])
    mem(torch.tensor([[0.0, 1.0], [0.6, 0.8]]), torch.tensor([0, 0]))
    # first (0.2, 0.8)/|.| = (0.242536, 0.970143); then 0.2 c + 0.8 (0.6, 0.8), normalised
    c = np.array([0.2, 0.8]) / np.hypot(0.2, 0.8)
    c = 0.2 * c + 0.8 * np.array([0.6, 0.8])
    c /= np.linalg.norm(c)
    np.testing.assert_allclose(c, [0.535261, 0.844687], atol=1e-6)
    torch.testing.assert_close(mem.centroids[0], torch.tensor(c, dtype=torch.float32))
    # the other order gives another centroid: the update is order dependent
    other = _memory([[1.0, 0.0], [0.0, 1.0]])
    other(torch.tensor([[0.6, 0.8], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert not torch.allclose(other.centroids[0], mem.centroids[0], atol=1e-3)


def test_memory_vectorised_update_equals_the_reference_loop():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(64, 16, generator=g), dim=1)
    cents = F.normalize(torch.randn(10, 16, generator=g), dim=1)
    targets = torch.randint(0, 10, (64,), generator=g)  # labels repeat up to ~12 times
    mem = ClusterMemory(16, 10, momentum=0.2)
    mem.centroids = cents.clone()
    mem.update(feats, targets)
    ref = cents.clone()
    for x, y in zip(feats, targets):  # cluster-contrast's CM.backward loop
        ref[y] = 0.2 * ref[y] + 0.8 * x
        ref[y] /= ref[y].norm()
    torch.testing.assert_close(mem.centroids, ref, atol=1e-6, rtol=0)


def test_memory_no_update_in_eval_mode_and_ddp_update_batch():
    mem = _memory([[1.0, 0.0], [0.0, 1.0]]).eval()
    mem(torch.tensor([[0.6, 0.8]]), torch.tensor([0]))
    torch.testing.assert_close(mem.centroids, torch.eye(2))
    mem.train()
    # under DDP the all-gathered batch updates the memory, not the local one
    mem(
        torch.tensor([[0.6, 0.8]]),
        torch.tensor([0]),
        update_feats=torch.tensor([[0.6, 0.8], [1.0, 0.0]]),
        update_targets=torch.tensor([1, 1]),
    )
    assert torch.equal(mem.centroids[0], torch.tensor([1.0, 0.0]))
    assert mem.centroids[1, 0] > 0.5  # moved towards (0.6, 0.8) then (1, 0)


def test_memory_init_centroids_are_normalised_cluster_means():
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [5.0, 5.0], [3.0, 4.0]])
    mem = ClusterMemory.from_features(feats, np.array([0, 0, -1, 1]))
    assert mem.num_clusters == 2
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(mem.centroids, torch.tensor([[s, s], [0.6, 0.8]]))
    with pytest.raises(ValueError, match="no member"):
        ClusterMemory(2, 3).init_centroids(feats, np.array([0, 0, -1, 1]))
    with pytest.raises(ValueError, match="num_clusters"):
        ClusterMemory(2, 1).init_centroids(feats, np.array([0, 0, -1, 1]))


def test_memory_state_round_trips_with_weights_only_load():
    mem = ClusterMemory.from_features(torch.randn(6, 4), np.array([0, 1, 2, 0, 1, 2]))
    mem(F.normalize(torch.randn(3, 4), dim=1), torch.tensor([0, 1, 2]))
    buf = io.BytesIO()
    torch.save(mem.state_dict(), buf)
    buf.seek(0)
    fresh = ClusterMemory(4, 3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh.centroids, mem.centroids)


def test_cross_entropy_smooth_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0]], requires_grad=True)
    # p = (0.25, 0.75); eps 0.2 -> q = (0.9, 0.1); the -1 row is ignored
    loss = cross_entropy_smooth(logits, torch.tensor([0, -1]), epsilon=0.2)
    assert loss.item() == pytest.approx(0.9 * math.log(4) + 0.1 * math.log(4 / 3), abs=1e-6)
    assert loss.item() == pytest.approx(1.276433, abs=1e-6)
    loss.backward()
    assert torch.equal(logits.grad[1], torch.zeros(2))
    plain = cross_entropy_smooth(logits, torch.tensor([1, 0]), epsilon=0.0)
    expected = math.log(4 / 3) + F.cross_entropy(torch.tensor([[5.0, -5.0]]), torch.tensor([0]))
    assert plain.item() == pytest.approx(float(expected) / 2, abs=1e-6)
    none = cross_entropy_smooth(logits, torch.tensor([-1, -1]))
    assert none.item() == 0.0


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    q = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    # row 0: -(0.5 ln 0.25 + 0.5 ln 0.75) = 0.836988; row 1: ln 2
    loss = soft_cross_entropy(logits, q)
    assert loss.item() == pytest.approx((0.836988 + math.log(2)) / 2, abs=1e-6)
    # one-hot soft targets reduce to the ordinary cross entropy
    onehot = F.one_hot(torch.tensor([1, 0]), 2).float()
    ce = F.cross_entropy(logits, torch.tensor([1, 0]))
    assert soft_cross_entropy(logits, onehot).item() == pytest.approx(ce.item(), abs=1e-6)
    with pytest.raises(ValueError, match="soft targets"):
        soft_cross_entropy(logits, q[:, :1])
