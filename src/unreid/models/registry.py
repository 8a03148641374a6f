"""Backbones by name: a tiny decorator registry (in the style of timm's ``_registry.py``).

A backbone factory takes ``last_stride`` (1 or 2, the stride of its last
down-sampling stage) and returns a :class:`Backbone`: an ``nn.Module`` mapping
normalised images (B, 3, H, W) to a feature map (B, C, h, w) and declaring C as
``out_channels``. Adding a backbone means one decorated function in
``backbones.py`` (and, when it has pretrained weights, one entry in
``weights.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from unreid.errors import ConfigError

__all__ = ["Backbone", "create_backbone", "is_backbone", "list_backbones", "register_backbone"]


class Backbone(nn.Module):
    """Base class of backbones: ``forward(x (B, 3, H, W)) -> (B, out_channels, h, w)``."""

    out_channels: int


BackboneFactory = Callable[..., Backbone]
F = TypeVar("F", bound=BackboneFactory)

_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(fn: F) -> F:
    """Decorator: register ``fn`` under its function name (``resnet50`` -> "resnet50")."""
    name = fn.__name__
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is registered twice")
    _BACKBONES[name] = fn
    return fn


def list_backbones() -> list[str]:
    """Sorted names of the registered backbones."""
    return sorted(_BACKBONES)


def is_backbone(name: str) -> bool:
    return name in _BACKBONES


def create_backbone(name: str, *, last_stride: int = 1) -> Backbone:
    """Build the backbone ``name`` with random weights.

    Raises:
        ConfigError: unknown name, or ``last_stride`` not 1 or 2.
    """
    if name not in _BACKBONES:
        raise ConfigError(
            f"model.backbone={name!r} is unknown: choose one of {', '.join(list_backbones())}"
        )
    if last_stride not in (1, 2):
        raise ConfigError(f"model.last_stride={last_stride} must be 1 (re-ID) or 2 (ImageNet)")
    model = _BACKBONES[name](last_stride=last_stride)
    if not isinstance(getattr(model, "out_channels", None), int):
        raise TypeError(f"backbone {name!r} does not declare out_channels")
    return model
