"""Methods: the registry, label containers, shared helpers, cluster_contrast labels and head,
supervised labels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unreid.config import load_config
from unreid.errors import ConfigError, TrainingError
from unreid.methods import (
    LabelInputs,
    Method,
    PseudoLabels,
    available_methods,
    build_method,
    get_method,
    register_method,
)
from unreid.methods.cluster_contrast import ClusterContrast
from unreid.methods.common import camera_ids, require_clusters, round_seed
from unreid.methods.supervised import Supervised


def _cfg(*overrides: str):
    return load_config([], ["data.root=/d", *overrides])


def test_registry_builds_by_name_and_lists_shipped_methods() -> None:
    assert isinstance(build_method(_cfg()), ClusterContrast)
    assert isinstance(build_method(_cfg("method.name=supervised")), Supervised)
    assert {"cluster_contrast", "supervised"} <= set(available_methods())
    with pytest.raises(ConfigError, match="method.name='nope' is unknown: use one of .*supervised"):
        get_method("nope")


def test_register_method_rejects_duplicates_and_non_methods() -> None:
    @register_method("_test_dummy")
    class Dummy(Method):
        pass

    assert get_method("_test_dummy") is Dummy and Dummy.name == "_test_dummy"
    with pytest.raises(ValueError, match="registered twice"):
        register_method("_test_dummy")(type("Other", (Method,), {}))
    with pytest.raises(TypeError):
        register_method("_x")(int)  # type: ignore[arg-type]


def test_zero_clusters_names_the_eps_knob() -> None:
    with pytest.raises(TrainingError) as err:
        require_clusters(np.full(5, -1), 2, knob="cluster.eps", value=0.6)
    msg = str(err.value)
    assert "epoch 3" in msg and "cluster.eps=0.6" in msg and "\n" not in msg
    assert require_clusters(np.array([0, 1, -1, 1]), 0, knob="cluster.eps", value=0.6) == 2


def test_camera_ids_are_all_zero_when_the_data_has_no_cameras() -> None:
    def ids(has_cameras: bool) -> np.ndarray:
        return camera_ids(LabelInputs(features=torch.zeros(3, 2), camids=np.array([2, 0, 1]),
                                      has_cameras=has_cameras, epoch=0))

    assert ids(True).tolist() == [2, 0, 1] and ids(True).dtype == np.int64
    assert ids(False).tolist() == [0, 0, 0] and ids(False).dtype == np.int64


def test_round_seed_is_fixed_per_seed_and_epoch() -> None:
    # Pinned values: a resumed run must draw the same clustering seed for an epoch.
    assert [round_seed(0, 0), round_seed(0, 1), round_seed(1, 0)] == [
        2968811710, 3964924996, 1835504127,
    ]


def test_pseudo_labels_state_roundtrip() -> None:
    pl = PseudoLabels(np.array([0, -1, 1]), 2, soft_index=np.array([1]),
                      soft_targets=torch.tensor([[0.25, 0.75]]), info={"eps": 0.6})
    back = PseudoLabels.from_state_dict(pl.state_dict())
    assert back.labels.tolist() == [0, -1, 1] and back.num_classes == 2
    assert back.soft_index.tolist() == [1] and torch.equal(back.soft_targets, pl.soft_targets)
    assert back.info == {"eps": 0.6} and back.num_outliers == 1


def _planted(n_ids: int = 6, per: int = 8, dim: int = 16, noise: float = 0.05) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(n_ids, dim, generator=gen), dim=1)
    x = centres.repeat_interleave(per, 0) + noise * torch.randn(n_ids * per, dim, generator=gen)
    return F.normalize(x, dim=1)


def _inputs(features: torch.Tensor, **kw) -> LabelInputs:
    n = len(features)
    return LabelInputs(features=features, camids=np.arange(n) % 2, has_cameras=True, epoch=0, **kw)


def test_cluster_contrast_recovers_planted_clusters() -> None:
    method = build_method(_cfg("cluster.k1=10", "cluster.k2=3"))
    labels = method.make_labels(_inputs(_planted()))
    assert labels.num_classes == 6 and labels.num_outliers == 0
    truth = np.repeat(np.arange(6), 8)
    # same partition as the truth, up to renumbering
    assert len(set(zip(labels.labels.tolist(), truth.tolist()))) == 6


def test_cluster_contrast_raises_when_eps_leaves_only_outliers() -> None:
    method = build_method(_cfg("cluster.k1=10", "cluster.k2=3", "cluster.eps=0.0001"))
    spread = F.normalize(torch.randn(40, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    with pytest.raises(TrainingError, match="cluster.eps=0.0001"):
        method.make_labels(_inputs(spread))


class _Feat(nn.Module):
    """A stand-in model: a linear map to 4-d features (only what the head needs)."""

    feature_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False)


def test_memory_head_starts_at_cluster_means_and_loss_matches_infonce() -> None:
    method = build_method(_cfg("method.temperature=0.5", "method.momentum=0.2"))
    feats = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0.8, 0.2, 0, 0], [0, 1.0, 0, 0],
                                      [0, 0.9, 0.1, 0], [0, 0, 0, 1.0]]), dim=1)
    labels = PseudoLabels(np.array([0, 0, 1, 1, -1]), 2)
    method.build_head(_Feat(), labels, feats)
    centroids = method.head.centroids.clone()
    assert torch.allclose(centroids[0], F.normalize(feats[:2].mean(0), dim=0))
    batch = torch.tensor([0, 2])
    out = SimpleNamespace(feat_norm=feats[batch])
    loss = method.loss(out, batch)
    expected = F.cross_entropy(feats[batch] @ centroids.T / 0.5, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # the momentum update moved each used centroid toward its sample
    moved = F.normalize(0.2 * centroids[0] + 0.8 * feats[0], dim=0)
    assert torch.allclose(method.head.centroids[0], moved, atol=1e-6)


def test_memory_head_updates_with_the_gathered_batch() -> None:
    method = build_method(_cfg())
    feats = torch.eye(4)[:3]
    labels = PseudoLabels(np.array([0, 1, 2]), 3)
    method.build_head(_Feat(), labels, feats)
    seen = []

    def gather(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape[0])
        return torch.cat([t, t])  # pretend a second rank sent the same batch

    method.loss(SimpleNamespace(feat_norm=feats[:1]), torch.tensor([0]), gather)
    assert seen == [1, 1]


def test_supervised_uses_true_identities_and_refuses_unlabelled_data() -> None:
    method = build_method(_cfg("method.name=supervised"))
    feats = _planted(2, 3)
    labels = method.make_labels(_inputs(feats, true_pids=np.array([5, 5, 5, 9, 9, 9])))
    assert labels.labels.tolist() == [0, 0, 0, 1, 1, 1] and labels.num_classes == 2
    with pytest.raises(ConfigError, match="unknown identities"):
        method.make_labels(_inputs(feats, true_pids=np.array([5, 5, -1, 9, 9, 9])))
    with pytest.raises(ConfigError):
        method.make_labels(_inputs(feats))
    assert Supervised.supervised and not ClusterContrast.supervised


def test_camera_note_is_printed_once(capsys: pytest.CaptureFixture[str]) -> None:
    class CamMethod(Method):
        uses_cameras = True

    m = CamMethod(_cfg())
    m.note_no_cameras(False)
    m.note_no_cameras(False)
    m.note_no_cameras(True)
    assert capsys.readouterr().out.count("uses camera labels") == 1
