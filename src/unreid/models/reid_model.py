"""The re-ID network: input normalisation -> backbone -> head; and :func:`build_model`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unreid.config import ModelConfig
from unreid.errors import WeightsError
from unreid.models import backbones as _backbones  # noqa: F401  (registers the backbones)
from unreid.models.head import GeM, ModelOutput, ReIDHead
from unreid.models.registry import Backbone, create_backbone, is_backbone
from unreid.models.weights import (
    Normalization,
    default_normalization,
    find_imagenet_weights,
    known_weights,
    load_backbone_weights,
    load_state_into,
    read_weights_file,
    remap_state_dict,
)

__all__ = ["ReIDModel", "build_model", "load_weights_file"]

_FC = "head.classifier."


class ReIDModel(nn.Module):
    """Backbone + BNNeck head, taking images in [0, 1].

    ``forward(x)``, x float (B, 3, H, W) in [0, 1] RGB: the weights' own input
    normalisation is applied inside (buffers ``input_mean``/``input_std``, saved
    with the state dict so a checkpoint keeps its transform). In eval mode it
    returns (B, D) float32 unit vectors of ``feature``: the BN-neck output ("bn")
    or the pooled map ("pool", what RSL/PUL cluster); in train mode a
    :class:`ModelOutput` (feat_bn, feat_norm, logits or None; the FC reads the
    same ``feature``).

    Attributes:
        feature_dim: D.
        backbone_name: registry name of the backbone.
        channels_last: the weights are stored channels-last and callers feed
            channels-last inputs (:func:`build_model` converts the weights).
    """

    input_mean: torch.Tensor  # registered buffers, declared for type checkers
    input_std: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        pooling: str = "avg",
        dropout: float = 0.0,
        num_classes: int = 0,
        norm: Normalization | None = None,
        backbone_name: str = "",
        channels_last: bool = False,
        feature: str = "bn",
    ) -> None:
        super().__init__()
        norm = norm or default_normalization(backbone_name)
        self.backbone = backbone
        self.head = ReIDHead(backbone.out_channels, pooling, dropout, num_classes, feature)
        self.register_buffer("input_mean", torch.tensor(norm.mean).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(norm.std).view(1, 3, 1, 1))
        self.feature_dim = int(backbone.out_channels)
        self.backbone_name = backbone_name
        self.channels_last = bool(channels_last)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def reset_classifier(self, num_classes: int, init: torch.Tensor | None = None) -> None:
        """See :meth:`ReIDHead.reset_classifier` (C outputs, optional (C, D) init)."""
        self.head.reset_classifier(num_classes, init)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] (B, 3, H, W) -> the backbone's input units."""
        return (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] (B, 3, H, W) -> backbone feature map (B, D, h, w)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | ModelOutput:
        fmap = self.forward_map(x)
        return self.head(fmap) if self.training else self.head.embed(fmap)


def load_weights_file(model: ReIDModel, path: str | Path) -> list[str]:
    """Load ``path`` (``model.pretrained=PATH``) into ``model`` in place.

    Accepts a whole-model state dict or an unreid checkpoint (key "model"): keys
    ``backbone.*``, ``head.*`` (pooling, BN neck), ``input_mean``/``input_std`` must
    all fit, except the classifier, loaded only when it has the model's shape (a
    source run's classifier belongs to its own identities: a model built without
    one, or with another class count, drops it); or a bare backbone state dict
    (e.g. torchvision's ``resnet50-0676ba61.pth``), mapped as the backbone's known
    weights are.

    Returns:
        the names of the file's tensors that were dropped (its classifier), [] if none.

    Raises:
        WeightsError: unreadable file or mismatched keys/shapes (one line; for an unreid
            checkpoint of another backbone, feature dim or pooling, the settings to use).
    """
    state, facts = read_weights_file(path)
    what = f"model.backbone={model.backbone_name}"
    if any(k.startswith("backbone.") for k in state):
        # The classifier belongs to a run's pseudo-labels: keep the saved one only when
        # it fits, otherwise the model's own (fresh or absent) classifier.
        own = {k: v for k, v in model.state_dict().items() if k.startswith(_FC)}
        saved = {k: v for k, v in state.items() if k.startswith(_FC)}
        fits = saved.keys() == own.keys() and all(v.shape == own[k].shape for k, v in saved.items())
        state = {k: v for k, v in state.items() if not k.startswith(_FC)}
        state.update(saved if fits else own)
        try:
            load_state_into(model, state, path=path, what=what)
        except WeightsError:
            signature = facts.get("model_signature")
            if signature:
                raise _other_model(path, signature, model) from None
            raise
        return [] if fits else sorted(saved)
    known = known_weights(model.backbone_name)
    target = model.backbone.state_dict()
    state = remap_state_dict(known[0] if known else None, state, target, path=path, what=what)
    load_state_into(model.backbone, state, path=path, what=what)
    return []


def _other_model(path: str | Path, saved: dict, model: ReIDModel) -> WeightsError:
    """The one line for a checkpoint written by a run of another model."""
    pooling = "gem" if isinstance(model.head.pool, GeM) else "avg"
    wanted = {"backbone": saved.get("backbone"), "pooling": saved.get("pooling")}
    have = {"backbone": model.backbone_name, "pooling": pooling}
    fix = " ".join(f"model.{k}={v}" for k, v in wanted.items() if v is not None and v != have[k])
    return WeightsError(
        f"model.pretrained={path} holds a {saved.get('backbone')} model (feature dim "
        f"{saved.get('feature_dim')}, {saved.get('pooling')} pooling), the config builds "
        f"{model.backbone_name} (feature dim {model.feature_dim}, {pooling} pooling): set "
        f"{fix or 'the model.* settings of the run that wrote it'} (its config.yaml), or "
        "start from another checkpoint or model.pretrained=imagenet"
    )


def build_model(cfg: ModelConfig, num_classes: int = 0, *, feature: str | None = None
                ) -> ReIDModel:
    """The model described by ``cfg`` (``model`` section of the config).

    ``feature`` (default ``cfg.feature``; ``auto`` means ``bn``) picks the vector the
    FC reads and eval mode returns: the BN-neck output or the pooled map (see
    :func:`unreid.methods.model_feature` for the method-aware choice).

    ``cfg.pretrained``: "none" (random init), "imagenet" (see
    :func:`~unreid.models.weights.find_imagenet_weights`) or a PATH to a state
    dict or an unreid checkpoint. ``num_classes`` > 0 adds the FC.

    Raises:
        ConfigError: unknown backbone/pooling, bad last_stride or dropout.
        WeightsError: weights not found or not fitting (one line).
    """
    name = str(cfg.backbone)
    pretrained = str(cfg.pretrained)
    found = None
    if pretrained == "imagenet" and is_backbone(name):
        found = find_imagenet_weights(name, cfg.weights_file)  # fail before building anything
    backbone = create_backbone(name, last_stride=int(cfg.last_stride))
    norm = default_normalization(name)
    if found is not None:
        spec, path = found
        load_backbone_weights(backbone, name, spec, path)
        norm = spec.norm
    model = ReIDModel(
        backbone,
        pooling=str(cfg.pooling),
        dropout=float(cfg.dropout),
        num_classes=int(num_classes),
        norm=norm,
        backbone_name=name,
        channels_last=bool(cfg.channels_last),
        feature=_resolve_feature(feature or str(cfg.feature)),
    )
    if model.channels_last:
        model.to(memory_format=torch.channels_last)
    if pretrained not in ("none", "imagenet"):
        if not Path(pretrained).expanduser().is_file():
            raise WeightsError(
                f"model.pretrained={pretrained}: no such file; use none, imagenet or the path "
                "of a state dict / unreid checkpoint"
            )
        load_weights_file(model, Path(pretrained).expanduser())
    return model


def _resolve_feature(feature: str) -> str:
    return "bn" if feature == "auto" else feature
