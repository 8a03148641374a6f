"""Label bookkeeping: dense renumbering, cluster counts, class centres."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unreid.cluster import class_centres, dense_labels, num_clusters


def test_dense_labels_renumbers_in_id_order_and_keeps_outliers() -> None:
    labels, num = dense_labels(np.array([7, -1, 3, 7, 9, -1]))
    assert labels.tolist() == [1, -1, 0, 1, 2, -1] and num == 3
    assert labels.dtype == np.int64
    assert dense_labels(np.array([-1, -1]))[0].tolist() == [-1, -1]
    assert dense_labels(np.array([-1, -1]))[1] == 0
    assert dense_labels(np.zeros(0, dtype=np.int64))[1] == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-1, 20), max_size=30))
def test_dense_labels_keep_the_partition(raw: list[int]) -> None:
    labels, num = dense_labels(np.array(raw, dtype=np.int64))
    raw_arr = np.array(raw, dtype=np.int64)
    assert ((labels < 0) == (raw_arr < 0)).all()
    assert sorted(set(labels[labels >= 0].tolist())) == list(range(num))
    # same id before <=> same id after, and the order of ids is kept
    for i in range(len(raw)):
        for j in range(len(raw)):
            if raw[i] >= 0 and raw[j] >= 0:
                assert (raw[i] == raw[j]) == (labels[i] == labels[j])
                assert (raw[i] < raw[j]) == (labels[i] < labels[j])


def test_num_clusters_counts_distinct_ids() -> None:
    assert num_clusters(np.array([0, 1, -1, 1])) == 2
    assert num_clusters(np.array([5, -1, 5, 9])) == 2  # ids need not be dense
    assert num_clusters(np.full(4, -1)) == 0
    assert num_clusters(np.zeros(0, dtype=np.int64)) == 0


def test_class_centres_are_normalised_means_of_normalised_members() -> None:
    x = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0]])
    centres = class_centres(x, np.array([0, 0, -1, 2]), 3)
    h = 1 / math.sqrt(2)
    # class 0: e0 + e1 (each normalised first, so the norms 3 and 2 do not weigh in);
    # class 1 has no member: a zero row; the -1 row is ignored
    expected = torch.tensor([[h, h], [0.0, 0.0], [h, h]])
    assert centres.dtype == torch.float32
    assert torch.allclose(centres, expected, atol=1e-6)


def test_class_centres_weigh_every_member_alike() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 10.0]])
    centre = class_centres(x, np.array([0, 0, 0]), 1)[0]
    assert centre.tolist() == pytest.approx([2 / math.sqrt(5), 1 / math.sqrt(5)], abs=1e-6)
