"""Typed run configuration.

One :class:`Config` dataclass tree, used through OmegaConf structured configs:
YAML files in ``configs/`` are merged on top of these defaults, then dotted
overrides from the command line (``--set cluster.eps=0.6``). OmegaConf checks
types and rejects unknown keys, so a typo in a YAML file or an override fails
at once with the key's name. Every run saves its resolved config as
``RUN_DIR/config.yaml``.

Each section belongs to one pipeline stage; the stage's pure functions take
plain arguments, and only ``methods/`` and ``engine/`` read these sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unreid.errors import ConfigError

__all__ = [
    "ClusterConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "MaskConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "load_config",
    "save_config",
    "to_container",
]


@dataclass
class DataConfig:
    """Where the images are and how they are decoded."""

    root: str = MISSING  # dataset folder (Market/Duke/CUHK03-NP/MSMT17 layout or a plain folder)
    layout: str = "auto"  # auto | market | msmt17 | folder
    # folder layout: regex with named groups (?P<camid>..), (?P<pid>..)
    camera_regex: str | None = None
    csv: str | None = None  # folder layout: CSV with columns path,camid[,pid]
    height: int = 256
    width: int = 128
    cache_dir: str = ".cache/images"  # decoded uint8 images, memory-mapped; "" keeps them in memory


@dataclass
class ModelConfig:
    backbone: str = "resnet50"  # resnet50 | resnet18 | tf_efficientnet_lite0 | tiny_cnn
    pretrained: str = "none"  # none | imagenet | PATH to a state dict
    # local ImageNet weights file (checked before the torch hub cache)
    weights_file: str | None = None
    last_stride: int = 1  # re-ID convention: stride 1 in the last stage doubles the map
    pooling: str = "avg"  # avg | gem
    dropout: float = 0.0  # before the FC of classification methods
    # the vector that is clustered and retrieved (and the FC's input): bn (BN-neck output)
    # | pool (pooled map, pool5) | auto (what the method declares: pool for rsl/pul as in
    # their papers, whose cosine thresholds assume non-negative pooled features; else bn)
    feature: str = "auto"
    channels_last: bool = True


@dataclass
class ClusterConfig:
    """Pseudo-label knobs for every method (each reads the ones it uses)."""

    # cluster-contrast / SFE-CR: k-reciprocal Jaccard + DBSCAN
    k1: int = 30
    k2: int = 6
    eps: float = 0.6
    min_samples: int = 4
    # SFE-CR: per-camera DBSCAN on foreground features + re-allocation
    local_eps: float = 0.5
    local_min_samples: int = 2
    delta: float = 0.85
    # RSL / PUL: k-means based selection
    num_classes: int = 0  # M (RSL) / K (PUL); 0 = estimate from the data (see methods)
    per_camera_k: int = 0  # RSL M_k; 0 = derive from M by each camera's share of images
    lambda_: float = 0.85
    # RSL / PUL: keep at least this share of the samples (the most similar ones) when
    # fewer pass lambda_; 0 = lambda_ alone decides (the papers), and too few is an error
    min_selected: float = 0.0
    soft_temperature: float = 0.02
    # PUL: lambda grows by this much each round (capped at 0.99): a slow rise, else the
    # selection empties long before the last epoch
    lambda_step: float = 0.005
    seed: int = 0


@dataclass
class MaskConfig:
    provider: str = "none"  # none | synthetic | png | mediapipe
    mask_dir: str | None = None  # png provider (and synthetic: defaults to ROOT/masks)
    noise: float = 0.0  # synthetic provider: degrade ground truth masks
    allow_missing: bool = False


@dataclass
class MethodConfig:
    name: str = "cluster_contrast"  # cluster_contrast | supervised | sfe_cr | rsl | pul
    temperature: float = 0.05  # InfoNCE temperature of the cluster memory
    momentum: float = 0.2  # cluster memory update momentum
    label_smoothing: float = 0.1  # classification methods
    soft_weight: float = 1.0  # RSL: weight of the soft-label loss
    augment: str = "cluster_contrast"  # cluster_contrast | rsl
    # SFE-CR ablation switches
    sfe: bool = True  # per-camera clustering on foreground features (else on input features)
    cr: bool = True  # camera-aware re-allocation on/off
    global_features: str = "input"  # input | foreground | fused


@dataclass
class OptimConfig:
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    step_size: int = 20
    gamma: float = 0.1
    epochs: int = 50
    iters: int = 200  # training steps per epoch
    num_instances: int = 4  # K: images per pseudo-identity in a batch
    num_identities: int = 8  # P: pseudo-identities per batch


@dataclass
class EvalConfig:
    eval_every: int = 10
    rerank: bool = False
    batch_size: int = 128
    max_rank: int = 50


@dataclass
class RunConfig:
    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # only takes effect on CUDA
    deterministic: bool = True
    report: bool = True  # write the HTML report at the end of training
    # mid-epoch checkpoints (RUN_DIR/checkpoint_step.pt) so a killed run loses < 1 epoch
    checkpoint_steps: int = 0  # every N training steps (0 = off)
    checkpoint_minutes: float = 10.0  # and/or every M minutes of training (0 = off)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_config(
    files: list[str | Path] | tuple[str | Path, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Defaults, then each YAML file in order, then ``key=value`` overrides.

    Returns a typed :class:`Config` (an OmegaConf structured config object that
    behaves like the dataclass). Raises :class:`ConfigError` with the offending
    file or key on a typo, a wrong type or a malformed override.
    """
    merged = OmegaConf.structured(Config)
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found: pass an existing YAML file")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{path}: {_first_line(exc)}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. cluster.eps=0.6")
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"--set: {_first_line(exc)}") from None
    return merged  # type: ignore[return-value]


def to_container(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of a config (for JSON logs and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run really used)."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
