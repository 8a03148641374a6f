"""Evaluator: exact values on hand-made cases, and equality with a brute-force reference."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import unreid.cluster
from unreid.cli import main
from unreid.errors import DataError
from unreid.eval import EvalResult, cosine_distance, evaluate, evaluate_features, evaluate_npz
from unreid.eval import metrics as metrics_module


def reference(distmat, q_pids, g_pids, q_camids, g_camids, *, max_rank=50, all_gallery=False):
    """Brute force, the textbook way (torchreid's eval_market1501 with a stable argsort,
    gallery pid -1 as junk): returns (mAP, mINP, cmc, num_valid, num_skipped)."""
    distmat = np.asarray(distmat, dtype=np.float64)
    aps, inps, cmcs = [], [], []
    for i in range(len(distmat)):
        order = np.argsort(distmat[i], kind="stable")
        gp, gc = np.asarray(g_pids)[order], np.asarray(g_camids)[order]
        remove = gp == -1
        if not all_gallery:
            remove |= (gp == q_pids[i]) & (gc == q_camids[i])
        raw_cmc = (gp == q_pids[i])[~remove].astype(np.int64)
        if not raw_cmc.any():
            continue
        cmc = raw_cmc.cumsum()
        last = np.flatnonzero(raw_cmc).max()
        inps.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        padded = np.ones(max_rank)  # cumulative: a query stays matched past its gallery
        padded[: min(max_rank, len(cmc))] = cmc[:max_rank]
        cmcs.append(padded)
        precision = raw_cmc.cumsum() / np.arange(1.0, len(raw_cmc) + 1)
        aps.append((precision * raw_cmc).sum() / raw_cmc.sum())
    n = len(aps)
    if n == 0:
        return np.nan, np.nan, np.full(max_rank, np.nan), 0, len(distmat)
    return np.mean(aps), np.mean(inps), np.mean(cmcs, axis=0), n, len(distmat) - n


def assert_matches_reference(result: EvalResult, ref) -> None:
    m_ap, m_inp, cmc, n_valid, n_skipped = ref
    assert result.num_valid_queries == n_valid
    assert result.num_skipped == n_skipped
    assert result.mAP == pytest.approx(m_ap, abs=1e-9, rel=0)
    assert result.mINP == pytest.approx(m_inp, abs=1e-9, rel=0)
    np.testing.assert_allclose(result.cmc, cmc, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- hand-made cases

# One query (pid 1, camera 0) against six gallery images.
HAND_D = np.array([[0.1, 0.2, 0.3, 0.05, 0.4, 0.5]])
HAND_GP = np.array([1, 2, 1, -1, 0, 1])  # same-cam match, negative, match, junk, distractor, match
HAND_GC = np.array([0, 1, 1, 1, 2, 2])
HAND_Q = (np.array([1]), np.array([0]))


def test_eval_metrics_market_protocol_hand_case():
    # Valid ranking: g1 (neg), g2 (pos), g4 (distractor = negative), g5 (pos); g0 is the
    # same camera and g3 is junk, both ignored. Positives at ranks 2 and 4.
    r = evaluate(HAND_D, HAND_Q[0], HAND_GP, HAND_Q[1], HAND_GC)
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)  # 0.5
    assert r.mINP == pytest.approx(2 / 4)
    assert r.rank(1) == 0.0
    assert r.cmc[1] == 1.0 and r.rank(50) == 1.0
    assert (r.num_valid_queries, r.num_skipped) == (1, 0)


def test_eval_metrics_all_gallery_keeps_same_camera_match():
    # g0 now counts: positives at ranks 1, 3, 5 (junk still ignored).
    r = evaluate(HAND_D, HAND_Q[0], HAND_GP, HAND_Q[1], HAND_GC, all_gallery=True)
    assert r.mAP == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)  # 34/45
    assert r.mINP == pytest.approx(3 / 5)
    assert r.rank(1) == 1.0


@pytest.mark.parametrize(
    ("dist", "g_pids", "ap", "inp"),
    [
        # All distances equal: gallery index order decides -> positives at ranks 2 and 4.
        ([0.5, 0.5, 0.5, 0.5], [2, 1, 2, 1], (1 / 2 + 2 / 4) / 2, 2 / 4),
        # g2 is nearest; g0 (negative) ties g1 (positive) and ranks first by index.
        ([0.3, 0.3, 0.1], [2, 1, 1], (1 / 1 + 2 / 3) / 2, 2 / 3),
        # Same distances, positive first by index.
        ([0.3, 0.3, 0.1], [1, 2, 1], 1.0, 1.0),
    ],
)
def test_eval_metrics_ties_broken_by_lower_gallery_index(dist, g_pids, ap, inp):
    n = len(dist)
    r = evaluate(np.array([dist]), [1], g_pids, [0], [1] * n)
    assert r.mAP == pytest.approx(ap)
    assert r.mINP == pytest.approx(inp)


def test_eval_metrics_skipped_queries_are_counted_and_excluded():
    # q0 (pid 1, cam 1): positive at rank 1 -> AP 1. q1 (pid 5) is absent from the gallery;
    # q2 (pid 2, cam 0) has its only match in its own camera: both skipped.
    d = np.array([[0.1, 0.9, 0.5], [0.2, 0.3, 0.4], [0.3, 0.1, 0.2]])
    r = evaluate(d, [1, 5, 2], [1, 2, 3], [1, 0, 0], [0, 0, 1])
    assert (r.num_valid_queries, r.num_skipped) == (1, 2)
    assert r.mAP == 1.0 and r.mINP == 1.0 and r.rank(1) == 1.0


def test_eval_metrics_mean_over_queries():
    # q0: positive at rank 2 of 2 -> AP 0.5, INP 0.5; q1: positive at rank 1 -> AP 1, INP 1.
    d = np.array([[0.2, 0.1], [0.1, 0.2]])
    r = evaluate(d, [1, 1], [1, 2], [0, 0], [1, 1])
    assert r.mAP == pytest.approx(0.75)
    assert r.mINP == pytest.approx(0.75)
    assert r.rank(1) == 0.5 and r.rank(2) == 1.0


def test_eval_metrics_no_valid_query_names_the_fix():
    with pytest.raises(DataError, match="all-gallery"):
        evaluate(np.zeros((2, 3)), [1, 2], [1, 2, 2], [0, 0], [0, 0, 0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_eval_metrics_non_finite_distances_rejected(bad):
    d = np.array([[0.1, bad]])
    with pytest.raises(DataError, match="NaN"):
        evaluate(d, [1], [1, 2], [0], [1, 1])


def test_eval_metrics_result_accessors():
    r = evaluate(HAND_D, HAND_Q[0], HAND_GP, HAND_Q[1], HAND_GC, max_rank=20)
    assert r.cmc.shape == (20,)
    d = r.as_dict()
    assert list(d) == ["mAP", "mINP", "R1", "R5", "R10", "R20", "num_valid"]
    assert d["R1"] == 0.0 and d["R5"] == 1.0 and d["num_valid"] == 1
    table = r.format_table()
    assert "mAP" in table and " 50.0" in table and "Rank-20" in table
    with pytest.raises(ValueError):
        r.rank(21)
    # A caller clipping max_rank to a small gallery still gets Rank-20 (cumulative CMC).
    short = evaluate(HAND_D, HAND_Q[0], HAND_GP, HAND_Q[1], HAND_GC, max_rank=6)
    assert short.cmc.shape == (20,) and short.rank(20) == 1.0


def test_eval_metrics_label_length_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="g_camids has 2 entries"):
        evaluate(HAND_D, HAND_Q[0], HAND_GP, HAND_Q[1], [0, 1])


# ---------------------------------------------------------------- property tests

labels = st.integers(min_value=1, max_value=12).flatmap(
    lambda q: st.integers(min_value=1, max_value=90).flatmap(
        lambda g: st.tuples(
            st.just((q, g)),
            st.integers(0, 2**32 - 1),
            st.sampled_from(["ints", "ulps", "normal"]),
            st.booleans(),
            st.sampled_from([1 << 22, 40, 1]),  # counting block: whole, a few rows, one row
        )
    )
)


def _random_case(shape, seed, kind):
    rng = np.random.default_rng(seed)
    q, g = shape
    n_ids = int(rng.integers(1, 6))
    q_pids = rng.integers(-1, n_ids, q)
    g_pids = rng.integers(-1, n_ids, g)
    q_cams = rng.integers(0, 3, q)
    g_cams = rng.integers(0, 3, g)
    if kind == "ints":  # many exact ties
        d = rng.integers(0, 4, (q, g)).astype(np.float32)
    elif kind == "ulps":  # distances a few float32 ulps apart: ties and near-ties in a bin
        d = (np.float32(1) + rng.integers(0, 6, (q, g)) * np.finfo(np.float32).eps).astype(
            np.float32
        )
    else:
        d = rng.standard_normal((q, g))
    return d, q_pids, g_pids, q_cams, g_cams


@settings(max_examples=250, deadline=None)
@given(labels)
def test_eval_metrics_equal_brute_force_reference(case):
    shape, seed, kind, all_gallery, block = case
    d, qp, gp, qc, gc = _random_case(shape, seed, kind)
    ref = reference(d, qp, gp, qc, gc, all_gallery=all_gallery)
    with mock.patch.object(metrics_module, "_COUNT_BLOCK_ELEMS", block):
        if ref[3] == 0:
            with pytest.raises(DataError):
                evaluate(d, qp, gp, qc, gc, all_gallery=all_gallery)
            return
        result = evaluate(d, qp, gp, qc, gc, all_gallery=all_gallery)
    assert_matches_reference(result, ref)


def test_eval_metrics_wide_gallery_with_many_bins_matches_reference():
    # G large enough that the histogram has thousands of bins, with a planted structure
    # (positives nearer) plus duplicated distances to force ties across bins.
    rng = np.random.default_rng(7)
    q, g = 40, 3000
    g_pids = rng.integers(0, 60, g)
    q_pids = rng.integers(0, 60, q)
    d = rng.random((q, g)) + 0.6 * (q_pids[:, None] != g_pids[None, :])
    d[:, 1000:1500] = d[:, :500]  # exact duplicates at other gallery indices
    d = d.astype(np.float32)
    qc, gc = rng.integers(0, 4, q), rng.integers(0, 4, g)
    for all_gallery in (False, True):
        ref = reference(d, q_pids, g_pids, qc, gc, all_gallery=all_gallery)
        assert 0.2 < ref[0] < 0.95  # non-trivial ranking
        assert_matches_reference(evaluate(d, q_pids, g_pids, qc, gc, all_gallery=all_gallery), ref)


# ---------------------------------------------------------------- features, npz, CLI


def _exact_features(rng, n, d=4):
    # Entries +-0.5 in 4 dims: unit norm exactly and dot products in multiples of 1/4, so
    # every GEMM blocking gives the same distances and ties are plentiful.
    return (rng.integers(0, 2, (n, d)) - 0.5).astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_eval_features_chunking_matches_dense_reference(chunk):
    rng = np.random.default_rng(3)
    qf, gf = _exact_features(rng, 9), _exact_features(rng, 31)
    qp, gp = rng.integers(0, 4, 9), rng.integers(-1, 4, 31)
    qc, gc = rng.integers(0, 2, 9), rng.integers(0, 2, 31)
    dense = cosine_distance(qf, gf)
    assert set(np.unique(dense.numpy())) <= {0.0, 0.5, 1.0, 1.5, 2.0}
    result = evaluate_features(qf, gf, qp, gp, qc, gc, chunk=chunk)
    assert_matches_reference(result, reference(dense, qp, gp, qc, gc))


def test_eval_features_normalises_and_matches_reference_on_random_features():
    rng = np.random.default_rng(4)
    qf = rng.standard_normal((20, 16)) * 3
    gf = rng.standard_normal((70, 16)) * 0.2
    qp, gp = rng.integers(0, 5, 20), rng.integers(0, 5, 70)
    qc, gc = rng.integers(0, 3, 20), rng.integers(0, 3, 70)
    unit_q = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    unit_g = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    ref = reference(1 - unit_q @ unit_g.T, qp, gp, qc, gc)
    assert_matches_reference(evaluate_features(qf, gf, qp, gp, qc, gc, chunk=7), ref)


def test_eval_features_nan_feature_rejected():
    qf = np.ones((2, 4), np.float32)
    qf[1, 2] = np.nan
    with pytest.raises(DataError, match="q_feats contains NaN"):
        evaluate_features(qf, np.ones((3, 4)), [1, 2], [1, 2, 2], [0, 0], [1, 1, 1])


def _write_npz(path, rng, **override):
    n_q, n_g, n_t = 6, 20, 5
    n = n_q + n_g + n_t
    arrays = {
        "feats": _exact_features(rng, n),
        "pids": np.concatenate([rng.integers(0, 3, n_q), rng.integers(0, 3, n_g), np.arange(n_t)]),
        "camids": rng.integers(0, 2, n),
        "split": np.array(["query"] * n_q + ["gallery"] * n_g + ["train"] * n_t),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_eval_npz_evaluates_query_against_gallery_and_ignores_train(tmp_path):
    a = _write_npz(tmp_path / "f.npz", np.random.default_rng(5))
    q, g = a["split"] == "query", a["split"] == "gallery"
    expected = evaluate_features(
        a["feats"][q], a["feats"][g], a["pids"][q], a["pids"][g], a["camids"][q], a["camids"][g]
    )
    result = evaluate_npz(tmp_path / "f.npz")
    assert result.as_dict() == expected.as_dict()
    np.testing.assert_array_equal(result.cmc, expected.cmc)


def test_eval_npz_missing_key_names_file_and_key(tmp_path):
    _write_npz(tmp_path / "f.npz", np.random.default_rng(5), camids=None)
    with pytest.raises(DataError, match=r"f\.npz: missing key\(s\) camids") as info:
        evaluate_npz(tmp_path / "f.npz")
    assert "\n" not in str(info.value)


def test_eval_npz_rerank_evaluates_the_reranked_distance(tmp_path, monkeypatch):
    a = _write_npz(tmp_path / "f.npz", np.random.default_rng(6))
    q, g = a["split"] == "query", a["split"] == "gallery"
    # Stand-in re-ranker: reverses the cosine order, so the result must differ from plain.
    calls = []

    def fake_rerank(qf, gf):
        calls.append((tuple(qf.shape), tuple(gf.shape)))
        return -cosine_distance(qf, gf)

    monkeypatch.setattr(unreid.cluster, "rerank", fake_rerank, raising=False)
    result = evaluate_npz(tmp_path / "f.npz", rerank=True)
    assert calls == [((q.sum(), 4), (g.sum(), 4))]
    dist = -cosine_distance(a["feats"][q], a["feats"][g])
    labels = (a["pids"][q], a["pids"][g], a["camids"][q], a["camids"][g])
    assert_matches_reference(result, reference(dist, *labels))


def test_eval_cli_eval_features_prints_table(tmp_path, capsys):
    _write_npz(tmp_path / "f.npz", np.random.default_rng(5))
    assert main(["eval-features", str(tmp_path / "f.npz")]) == 0
    out = capsys.readouterr().out
    assert "Rank-1" in out and "mAP" in out and "queries:" in out


def test_eval_cli_eval_features_missing_key_exits_2_with_one_line(tmp_path, capsys):
    _write_npz(tmp_path / "f.npz", np.random.default_rng(5), split=None)
    assert main(["eval-features", str(tmp_path / "f.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing key(s) split" in err and "f.npz" in err


def test_eval_metrics_accepts_torch_and_integer_distances():
    d = torch.tensor([[3, 1, 2]])
    r = evaluate(d, torch.tensor([1]), torch.tensor([1, 2, 1]), torch.tensor([0]), [1, 1, 1])
    # Order g1 (neg), g2 (pos), g0 (pos): ranks 2 and 3.
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
