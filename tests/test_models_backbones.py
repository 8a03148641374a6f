"""Backbone registry and feature-map shapes."""

from __future__ import annotations

import pytest
import torch

from unreid.config import ModelConfig, load_config
from unreid.errors import ConfigError
from unreid.models import build_model, create_backbone, list_backbones, register_backbone


def test_registry_lists_the_backbones() -> None:
    assert list_backbones() == ["resnet18", "resnet50", "tf_efficientnet_lite0", "tiny_cnn"]


def test_registering_a_name_twice_fails() -> None:
    def tiny_cnn(last_stride: int = 1):  # same name as the registered one
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="tiny_cnn"):
        register_backbone(tiny_cnn)


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="model.backbone='resnet51'.*resnet50"):
        create_backbone("resnet51")


def test_last_stride_must_be_1_or_2() -> None:
    with pytest.raises(ConfigError, match="model.last_stride=3"):
        create_backbone("tiny_cnn", last_stride=3)


@pytest.mark.parametrize(
    ("name", "channels"),
    [("tiny_cnn", 96), ("resnet18", 512), ("tf_efficientnet_lite0", 1280)],
)
@pytest.mark.parametrize("last_stride", [1, 2])
def test_feature_map_shapes(name: str, channels: int, last_stride: int) -> None:
    net = create_backbone(name, last_stride=last_stride).eval()
    assert net.out_channels == channels
    scale = 16 * last_stride  # overall stride: 32 (ImageNet) or 16 (re-ID last stride 1)
    with torch.no_grad():
        for h, w in [(64, 32), (256, 128)]:
            fmap = net(torch.rand(2, 3, h, w))
            assert fmap.shape == (2, channels, h // scale, w // scale)


@pytest.mark.parametrize(("last_stride", "size"), [(1, (16, 8)), (2, (8, 4))])
def test_resnet50_last_stride_1_gives_16x8_map_at_256x128(last_stride: int, size) -> None:
    model = build_model(ModelConfig(backbone="resnet50", last_stride=last_stride)).eval()
    assert model.feature_dim == 2048
    with torch.no_grad():
        fmap = model.forward_map(torch.rand(1, 3, 256, 128))
        small = model.forward_map(torch.rand(1, 3, 64, 32))
    assert fmap.shape == (1, 2048, *size)
    assert small.shape == (1, 2048, 64 // (16 * last_stride), 32 // (16 * last_stride))


def test_tiny_cnn_is_small() -> None:
    net = create_backbone("tiny_cnn")
    n = sum(p.numel() for p in net.parameters())
    assert 80_000 < n < 120_000


def test_build_model_from_a_loaded_config() -> None:
    cfg = load_config(overrides=["model.backbone=tiny_cnn", "model.pooling=gem"])
    model = build_model(cfg.model, num_classes=5)
    assert model.backbone_name == "tiny_cnn" and model.feature_dim == 96
    assert model.num_classes == 5
    assert model.head.pool.p.item() == 3.0
