"""The registered backbones (random weights; ``weights.py`` loads pretrained ones).

Each maps normalised images (B, 3, H, W) to a feature map (B, C, h, w). The
re-ID convention of a stride-1 last stage (``last_stride=1``) doubles the map
of the last stage: a 256x128 input gives 16x8 instead of 8x4 for ResNet-50.
Module names follow the source libraries (torchvision, timm) so that their
state dicts map onto ours by name, less the ImageNet classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unreid.models.registry import Backbone, register_backbone

__all__ = ["EfficientNetLite", "TinyCNN", "TorchvisionResNet"]


def _unit_last_stride(module: nn.Module) -> None:
    """Every stride-2 convolution inside ``module`` (one stage's first block) gets stride 1."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2):
            m.stride = (1, 1)


class TorchvisionResNet(Backbone):
    """torchvision's ResNet without ``avgpool``/``fc`` (its other names kept)."""

    def __init__(self, arch: str, last_stride: int) -> None:
        super().__init__()
        # each backbone imports its own library when built (a run builds one): tiny_cnn
        # needs no torchvision (~1.5 s of CPU), a ResNet no timm (~0.5 s more)
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        if last_stride == 1:
            _unit_last_stride(net.layer4[0])  # conv (and its downsample shortcut)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4,
        )
        self.out_channels = int(net.fc.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class EfficientNetLite(Backbone):
    """timm's ``tf_efficientnet_lite0`` feature extractor (up to ``conv_head``/``bn2``).

    The ``tf_`` variant pads like TensorFlow ("same", asymmetric): the weights
    converted from the TF checkpoints (the efficientnet-lite0 pip package) need
    it; timm's ``efficientnet_lite0`` pads symmetrically and gives other features.
    """

    def __init__(self, name: str, last_stride: int) -> None:
        super().__init__()
        import timm  # not at the top: see TorchvisionResNet

        # Any: timm models expose their stages (blocks, num_features) as plain attributes
        net: Any = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
        if last_stride == 1:
            # The last stride-2 stage (112 -> 192 channels). Its conv pads dynamically
            # ("same"), so stride 1 keeps the map size without other changes.
            last = [b for b in net.blocks if _has_stride_2(b)][-1]
            _unit_last_stride(last[0])
        self.net = net
        self.out_channels = int(net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def _has_stride_2(module: nn.Module) -> bool:
    return any(
        isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2) for m in module.modules()
    )


class TinyCNN(Backbone):
    """Five conv-BN-ReLU blocks (~0.1 M parameters) for fast tests.

    Strides 2, 2, 2, 2, ``last_stride``: the same overall stride as ResNet (32, or
    16 with ``last_stride=1``), so map sizes behave like the real backbones.
    """

    CHANNELS = (16, 32, 48, 64, 96)

    def __init__(self, last_stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        strides = (2, 2, 2, 2, last_stride)
        c_in = 3
        for c_out, s in zip(self.CHANNELS, strides):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=s, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_channels = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_backbone
def resnet50(last_stride: int = 1) -> Backbone:
    """torchvision ResNet-50 (2048 channels)."""
    return TorchvisionResNet("resnet50", last_stride)


@register_backbone
def resnet18(last_stride: int = 1) -> Backbone:
    """torchvision ResNet-18 (512 channels)."""
    return TorchvisionResNet("resnet18", last_stride)


@register_backbone
def tf_efficientnet_lite0(last_stride: int = 1) -> Backbone:
    """timm EfficientNet-Lite0, TF padding (1280 channels)."""
    return EfficientNetLite("tf_efficientnet_lite0", last_stride)


@register_backbone
def tiny_cnn(last_stride: int = 1) -> Backbone:
    """Small CNN for tests (96 channels)."""
    return TinyCNN(last_stride)
