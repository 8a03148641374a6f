from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unreid.data.sampler import PKSampler, RandomBatchSampler
from unreid.errors import TrainingError

# 6 identities: id 0 has 1 image, id 1 has 2, ids 2..5 have 5 each; 3 outliers.
LABELS = np.array([-1, 0, 1, 1, -1] + [i for i in range(2, 6) for _ in range(5)] + [-1])


def test_pk_batch_has_p_distinct_identities_with_k_images_each():
    s = PKSampler(LABELS, num_identities=3, num_instances=4, seed=0)
    for _ in range(10):
        batch = s.next_batch()
        assert batch.dtype == np.int64 and batch.shape == (12,)
        blocks = LABELS[batch].reshape(3, 4)
        assert (blocks == blocks[:, :1]).all()  # K consecutive images of one identity
        assert len(set(blocks[:, 0].tolist())) == 3
        assert (LABELS[batch] >= 0).all()


def test_pk_outliers_are_never_sampled_and_small_identities_repeat():
    s = PKSampler(LABELS, num_identities=2, num_instances=4, seed=3)
    seen = np.concatenate([s.next_batch() for _ in range(60)])
    assert not np.isin(seen, np.flatnonzero(LABELS == -1)).any()
    # id 0 has a single image (index 1): its block is that image four times
    blocks = seen.reshape(-1, 4)
    single = blocks[LABELS[blocks[:, 0]] == 0]
    assert len(single) > 0 and (single == 1).all()
    # identities with >= K images are sampled without replacement
    big = blocks[LABELS[blocks[:, 0]] >= 2]
    assert all(len(set(row.tolist())) == 4 for row in big)


def test_pk_uses_identities_equally_within_an_epoch():
    labels = np.repeat(np.arange(12), 3)
    s = PKSampler(labels, num_identities=4, num_instances=2, seed=1)
    assert s.steps_per_epoch == 3
    ids = [labels[s.next_batch()[::2]] for _ in range(3)]
    assert sorted(np.concatenate(ids).tolist()) == list(range(12))


def test_pk_ddp_ranks_draw_disjoint_identities_at_each_step():
    labels = np.repeat(np.arange(20), 4)
    ranks = [PKSampler(labels, 4, 2, seed=7, rank=r, world_size=2) for r in range(2)]
    for _ in range(12):
        a, b = (labels[r.next_batch()] for r in ranks)
        assert not set(a.tolist()) & set(b.tolist())


def test_pk_resume_from_state_gives_the_same_batches():
    full = PKSampler(LABELS, 3, 4, seed=5)
    expected = [full.next_batch() for _ in range(9)]
    first = PKSampler(LABELS, 3, 4, seed=5)
    for _ in range(4):
        first.next_batch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = PKSampler(LABELS, 3, 4, seed=99)  # the state's seed wins
    resumed.load_state_dict(state)
    got = [resumed.next_batch() for _ in range(5)]
    for e, g in zip(expected[4:], got):
        np.testing.assert_array_equal(e, g)


def test_pk_state_from_other_labels_is_refused():
    s = PKSampler(LABELS, 3, 4, seed=0)
    other = PKSampler(np.repeat(np.arange(9), 2), 3, 4, seed=0)
    with pytest.raises(TrainingError, match="other pseudo-labels"):
        s.load_state_dict(other.state_dict())


def test_pk_too_few_identities_names_the_knobs():
    with pytest.raises(TrainingError, match=r"optim\.num_identities=8.*cluster\.eps"):
        PKSampler(np.array([0, 0, 1, -1]), 8, 4, seed=0)
    with pytest.raises(TrainingError, match="0 \\(pseudo-\\)identities"):
        PKSampler(np.full(10, -1), 1, 4, seed=0)
    with pytest.raises(TrainingError, match="x 2 process"):
        PKSampler(np.repeat(np.arange(5), 2), 3, 2, seed=0, world_size=2)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=4, max_size=15),
    p=st.integers(1, 4),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_pk_batches_are_valid_for_any_label_layout(sizes, p, k, seed):
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)] + [np.full(2, -1)])
    labels = labels.astype(np.int64)
    if len({i for i, n in enumerate(sizes) if n > 0}) < p:
        with pytest.raises(TrainingError):
            PKSampler(labels, p, k, seed=seed)
        return
    s = PKSampler(labels, p, k, seed=seed)
    for _ in range(3):
        blocks = labels[s.next_batch()].reshape(p, k)
        assert (blocks >= 0).all() and (blocks == blocks[:, :1]).all()
        assert len(set(blocks[:, 0].tolist())) == p


def test_random_batches_cover_each_index_once_per_epoch_and_resume():
    idx = np.arange(100, 130)
    s = RandomBatchSampler(idx, 7, seed=2)
    assert s.steps_per_epoch == 4
    epoch = np.concatenate([s.next_batch() for _ in range(4)])
    assert len(set(epoch.tolist())) == 28 and set(epoch.tolist()) <= set(idx.tolist())
    state = s.state_dict()
    more = [s.next_batch() for _ in range(3)]
    again = RandomBatchSampler(idx, 7, seed=2)
    again.load_state_dict(state)
    for a, b in zip(more, (again.next_batch() for _ in range(3))):
        np.testing.assert_array_equal(a, b)


def test_random_batches_ddp_disjoint_and_too_few_samples_error():
    idx = np.arange(40)
    r0, r1 = (RandomBatchSampler(idx, 5, seed=0, rank=r, world_size=2) for r in range(2))
    for _ in range(8):
        assert not set(r0.next_batch().tolist()) & set(r1.next_batch().tolist())
    with pytest.raises(TrainingError, match="batch size"):
        RandomBatchSampler(np.arange(3), 4, seed=0)
