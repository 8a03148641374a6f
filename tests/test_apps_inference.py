"""Rebuilding a checkpoint's model: the feature the checkpoint records wins over the
method registry, which is only the fallback for checkpoints that record none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unreid.apps.inference import load_model_from_checkpoint
from unreid.config import load_config, to_container
from unreid.engine.checkpoint import model_signature, save_checkpoint
from unreid.errors import ConfigError
from unreid.methods import model_feature
from unreid.models import build_model


def _checkpoint(path: Path, method: str, feature: str | None) -> tuple[Path, torch.nn.Module]:
    cfg = load_config([], ["data.root=unused", "data.height=32", "data.width=16",
                           "model.backbone=tiny_cnn", "model.pretrained=none"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 0)
    cfg_dict = to_container(cfg)
    cfg_dict["method"]["name"] = method
    state = {
        "config": cfg_dict,
        "model_signature": model_signature(model, cfg_dict),
        "model": model.state_dict(),
        "num_classes": 0,
    }
    if feature is not None:
        state["model_feature"] = feature
    return save_checkpoint(state, path), model


@pytest.mark.parametrize("feature", ["pool", "bn"])
def test_the_recorded_feature_is_used_without_the_method_registry(
    tmp_path: Path, feature: str
) -> None:
    path, built = _checkpoint(tmp_path / "c.pt", "an_out_of_tree_method", feature)
    model, cfg = load_model_from_checkpoint(path)
    assert model.head.feature == feature and cfg.method.name == "an_out_of_tree_method"
    x = torch.rand(3, 3, 32, 16, generator=torch.Generator().manual_seed(1))
    built.head.feature = feature
    with torch.no_grad():
        torch.testing.assert_close(model(x), built.eval()(x))


def test_without_a_recorded_feature_the_method_decides(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path / "old.pt", "cluster_contrast", None)
    model, cfg = load_model_from_checkpoint(path)
    assert model.head.feature == model_feature(cfg)
    path, _ = _checkpoint(tmp_path / "unknown.pt", "an_out_of_tree_method", None)
    with pytest.raises(ConfigError, match="method.name='an_out_of_tree_method' is unknown"):
        load_model_from_checkpoint(path)
