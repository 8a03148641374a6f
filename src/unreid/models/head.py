"""Re-ID head: pooling -> BN neck -> (dropout -> FC) (the BNNeck of Luo et al., BoT).

Features for retrieval and for the contrastive methods are the L2-normalised
BN-neck output; the classification methods (RSL, PUL, a supervised softmax)
add an FC without bias on the un-normalised BN output, re-created each round
with :meth:`ReIDHead.reset_classifier`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from unreid.errors import ConfigError

__all__ = ["FEATURES", "GeM", "ModelOutput", "ReIDHead", "build_pooling"]

FEATURES = ("bn", "pool")


class ModelOutput(NamedTuple):
    """Train-mode output of :class:`~unreid.models.ReIDModel`.

    feat_bn: (B, D) BN-neck output (not normalised).
    feat_norm: (B, D) ``feat_bn`` L2-normalised (unit rows).
    logits: (B, C) classifier output on ``feat_bn``, or None without a classifier.
    """

    feat_bn: torch.Tensor
    feat_norm: torch.Tensor
    logits: torch.Tensor | None


class GeM(nn.Module):
    """Generalised-mean pooling ``(mean x^p)^(1/p)`` over h, w; ``p`` is learnable.

    p = 1 is average pooling, p -> inf max pooling. Input (B, C, h, w) >= 0
    (after ReLU); values are clamped to ``eps`` so that the power is defined.
    Output (B, C) float32: the power is taken in float32 because x^3 overflows
    float16 under autocast for activations above ~40.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        return x.float().clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}, eps={self.eps}"


class AvgPool(nn.Module):
    """Global average pooling (B, C, h, w) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def build_pooling(name: str) -> nn.Module:
    """``avg`` or ``gem`` (p initialised to 3)."""
    if name == "avg":
        return AvgPool()
    if name == "gem":
        return GeM()
    raise ConfigError(f"model.pooling={name!r} is unknown: use avg or gem")


class ReIDHead(nn.Module):
    """Pooling, BN neck with a frozen zero bias, optional dropout + bias-free FC.

    Args:
        dim: channels of the backbone map (= feature dimension D).
        pooling: "avg" or "gem".
        dropout: dropout probability before the FC (classification methods).
        num_classes: FC outputs; 0 = no classifier.
    """

    def __init__(self, dim: int, pooling: str = "avg", dropout: float = 0.0,
                 num_classes: int = 0, feature: str = "bn") -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1)")
        if feature not in FEATURES:
            raise ConfigError(f"model.feature={feature!r} is unknown: use one of "
                              f"{', '.join(FEATURES)}")
        # Which vector the FC reads and retrieval uses: the BN-neck output (BoT, the
        # contrastive methods) or the pooled map itself (pool5, as RSL and PUL do).
        self.feature = feature
        self.pool = build_pooling(pooling)
        self.neck = nn.BatchNorm1d(dim)
        # BNNeck: the bias stays 0 so that the normalised features are not shifted
        # away from the origin (cosine retrieval is sensitive to a common offset).
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        self.dim = dim
        self.register_module("classifier", None)
        self.reset_classifier(num_classes)

    @property
    def num_classes(self) -> int:
        return 0 if self.classifier is None else int(self.classifier.out_features)

    def reset_classifier(self, num_classes: int, init: torch.Tensor | None = None) -> None:
        """Replace the FC by a fresh one with ``num_classes`` outputs (0 removes it).

        Args:
            num_classes: C >= 0.
            init: optional (C, D) weight, copied as given (pass L2-normalised
                centres to start from a cosine-like classifier, as RSL does);
                default N(0, 0.001^2) as in BoT. Logits are ``feat_bn @ init.T``.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if num_classes == 0:
            self.classifier = None
            return
        ref = self.neck.weight
        fc = nn.Linear(self.dim, num_classes, bias=False, device=ref.device, dtype=ref.dtype)
        if init is None:
            nn.init.normal_(fc.weight, std=0.001)
        else:
            if tuple(init.shape) != (num_classes, self.dim):
                raise ValueError(
                    f"classifier init has shape {tuple(init.shape)}, "
                    f"expected ({num_classes}, {self.dim})"
                )
            with torch.no_grad():
                fc.weight.copy_(init)
        self.classifier = fc

    def forward(self, fmap: torch.Tensor, *, with_logits: bool = True) -> ModelOutput:
        """fmap (B, D, h, w) -> :class:`ModelOutput` (logits only when asked and present)."""
        pooled = self.pool(fmap)
        feat_bn = self.neck(pooled)
        feat_norm = F.normalize(feat_bn.float(), dim=1)
        logits = None
        if with_logits and self.classifier is not None:
            logits = self.classifier(self.dropout(self._fc_input(pooled, feat_bn)))
        return ModelOutput(feat_bn, feat_norm, logits)

    def _fc_input(self, pooled: torch.Tensor, feat_bn: torch.Tensor) -> torch.Tensor:
        if self.feature == "bn":
            return feat_bn
        # Unit pooled vectors scaled to the BN output's typical norm sqrt(D): the FC then
        # reads the direction that is clustered, at the scale one initialisation assumes.
        return F.normalize(pooled.float(), dim=1).to(feat_bn.dtype) * self.dim ** 0.5

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """Eval-mode retrieval features: (B, D) L2-normalised ``feature`` vectors."""
        if self.feature == "pool":
            return F.normalize(self.pool(fmap).float(), dim=1)
        return F.normalize(self.neck(self.pool(fmap)).float(), dim=1)
