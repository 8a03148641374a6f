"""Evaluation protocols: market vs all-gallery (one camera), the query image excluded."""

from __future__ import annotations

import numpy as np
import pytest

from unreid.errors import ConfigError, DataError
from unreid.eval import evaluate, evaluate_protocol, resolve_protocol, self_matches

# One camera; query q.jpg (pid 1); the gallery holds q.jpg itself, a pid-2 image and
# another pid-1 image, at distances 0.0, 0.3, 0.5.
DIST = np.array([[0.0, 0.3, 0.5]])
Q_PIDS, G_PIDS = np.array([1]), np.array([1, 2, 1])
Q_CAMS, G_CAMS = np.array([0]), np.array([0, 0, 0])
Q_PATHS, G_PATHS = np.array(["w/q.jpg"]), np.array(["w/./q.jpg", "w/a.jpg", "w/b.jpg"])


def test_self_matches_are_the_same_file_after_resolving_the_path() -> None:
    qi, gi = self_matches(Q_PATHS, G_PATHS)
    assert qi.tolist() == [0] and gi.tolist() == [0]
    qi, gi = self_matches(["x.jpg", "y.jpg"], ["y.jpg", "z.jpg", "x.jpg"])
    assert (qi.tolist(), gi.tolist()) == ([0, 1], [2, 0])


def test_all_gallery_ap_excludes_only_the_query_image_itself() -> None:
    r = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, all_gallery=True,
                 exclude=self_matches(Q_PATHS, G_PATHS))
    # ranked: a.jpg (pid 2) then b.jpg (pid 1): the only positive at rank 2
    assert r.mAP == 0.5 and r.mINP == 0.5 and r.rank(1) == 0.0 and r.rank(2) == 1.0
    # without the exclusion the query finds itself first: AP = (1/1 + 2/3) / 2
    kept = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, all_gallery=True)
    assert kept.mAP == pytest.approx(5 / 6)


def test_market_protocol_on_one_camera_has_nothing_to_score() -> None:
    with pytest.raises(DataError, match="--protocol all-gallery"):
        evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)


def test_auto_picks_all_gallery_with_a_note_for_one_camera_only() -> None:
    one = resolve_protocol("auto", Q_CAMS, G_CAMS)
    assert one.name == "all-gallery" and one.all_gallery and "one camera" in one.note
    two = resolve_protocol("auto", np.array([0]), np.array([0, 1]))
    assert (two.name, two.note) == ("market", None)
    assert resolve_protocol("all-gallery", np.array([0]), np.array([1])).note is None
    with pytest.raises(ConfigError, match="eval.protocol='cmc'"):
        resolve_protocol("cmc", Q_CAMS, G_CAMS)


def test_evaluate_protocol_on_features_reports_what_it_used() -> None:
    q = np.array([[1.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])  # cosine distances 0, 0.2, 0.4
    r = evaluate_protocol(q, g, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, paths=(Q_PATHS, G_PATHS))
    assert (r.mAP, r.protocol) == (0.5, "all-gallery") and r.note is not None
    assert r.as_dict()["protocol"] == "all-gallery"
    assert "protocol: all-gallery" in r.format_table()
    market = evaluate_protocol(q, g, Q_PIDS, G_PIDS, np.array([1]), G_CAMS, protocol="auto")
    assert market.protocol == "market" and "protocol" not in market.as_dict()
    # the query now sits in another camera: every gallery image is cross-camera and the
    # market protocol excludes nothing by path, so q.jpg counts: AP = (1/1 + 2/3) / 2
    assert market.mAP == pytest.approx(5 / 6)


def test_exclude_indices_are_checked() -> None:
    with pytest.raises(DataError, match="exclude"):
        evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, all_gallery=True,
                 exclude=(np.array([0]), np.array([3])))
