"""Typed run configuration.

One :class:`Config` dataclass tree, used through OmegaConf structured configs:
YAML files in ``configs/`` are merged on top of these defaults, then dotted
overrides from the command line (``--set cluster.eps=0.6``). OmegaConf checks
types and rejects unknown keys, so a typo in a YAML file or an override fails
at once with the key's name. Every run saves its resolved config as
``RUN_DIR/config.yaml``.

Configs inherit: a file's ``_base_`` key names one file or a list of files
(paths relative to the naming file) merged in order before the file's own
keys, so a dataset config is the handful of keys that differ from its method's
base (``configs/base/``). Several files given to :func:`load_config` (``unreid
train --config a.yaml b.yaml``) merge the same way, left to right.

:func:`validate_config` checks every value against its allowed range (:data:`RULES`)
before any work starts, so ``optim.epochs=0`` or ``cluster.eps=1.5`` fail with
one line instead of after data loading. Recipes shipped inside the package
(the demo's) live in ``unreid/recipes/`` and load through the same loader
(:func:`recipe_path`).

``cluster.auto`` is on for a config that sets none of the Jaccard + DBSCAN knobs
(:data:`AUTO_KNOBS`) nor ``cluster.auto`` itself: the data then chooses them each
epoch. Setting any of them (the papers' configs do) keeps the values as given.

Each section belongs to one pipeline stage; the stage's pure functions take
plain arguments, and only ``methods/``, ``engine/``, ``apps/`` and
``data/roots.py`` read these sections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unreid.errors import ConfigError
from unreid.io import first_line

__all__ = [
    "CameraConfig",
    "ClusterConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "MaskConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "RULES",
    "Rule",
    "RunConfig",
    "SourceConfig",
    "check_value",
    "load_config",
    "recipe_path",
    "save_config",
    "to_container",
    "validate_config",
]

BASE_KEY = "_base_"  # in a YAML file: the file(s) it inherits from
# the cluster knobs cluster.auto chooses; a config setting any of them keeps auto off
AUTO_KNOBS = ("k1", "k2", "eps", "min_samples")
RECIPES = Path(__file__).with_name("recipes")  # package data: recipes such as the demo's


@dataclass
class DataConfig:
    """Where the images are and how they are decoded."""

    # dataset folder (Market/Duke/CUHK03-NP/MSMT17 layout or a plain folder), or a list of
    # labelled folders trained as one (identities and cameras kept apart; query/gallery of
    # the first): str | list[str], typed Any because structured configs have no unions
    root: Any = MISSING
    layout: str = "auto"  # auto | market | msmt17 | folder
    # folder layout: regex with named groups (?P<camid>..), (?P<pid>..)
    camera_regex: str | None = None
    csv: str | None = None  # folder layout: CSV with columns path,camid[,pid]
    height: int = 256
    width: int = 128
    cache_dir: str = "auto"  # decoded images, memory-mapped: auto = per-user cache; "" = in memory


@dataclass
class SourceConfig:
    """Source replay: a labelled source set trained with its true identities beside the
    target's pseudo-labels, so adaptation keeps what the source model learnt (off while
    ``root`` is unset). Decoded at ``data.height`` x ``data.width`` like the target."""

    # labelled dataset folder (Market-1501 / MSMT17 layout), or a list of them merged with
    # identities kept apart as for data.root; None = off: str | list[str] | None, typed Any
    # because structured configs have no unions
    root: Any = None
    layout: str = "auto"  # auto | market | msmt17 | folder (folder needs pids in the names)
    weight: float = 1.0  # of the source loss in each step's total (one more forward/backward)


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
    channels_last: bool = True  # NHWC weights and inputs (faster on CPU and CUDA alike)


@dataclass
class ClusterConfig:
    """Pseudo-label knobs for every method (each reads the ones it uses)."""

    # Jaccard + DBSCAN knobs (k1, k2, eps, min_samples) chosen from each epoch's features
    # (unreid.cluster.auto_cluster_params) instead of the values below. load_config turns it
    # on for a config that sets none of those four knobs (nor auto itself); the papers'
    # configs (configs/base/) set their values and auto: false. Off for a Config() built
    # in Python, which keeps the papers' defaults below.
    auto: bool = False
    # cluster-contrast / SFE-CR: k-reciprocal Jaccard + DBSCAN
    k1: int = 30
    k2: int = 6
    # plain | camera_aware (CA-Jaccard: k-reciprocal sets inside and across cameras, with
    # camera.k1_intra, k1_inter, k2_intra, k2_inter instead of k1, k2); every Jaccard + DBSCAN
    # clustering reads it: cluster_contrast, sfe_cr's global one, cap, rsl/pul's class count
    # (with cluster.auto, eps and min_samples are chosen on the camera-aware distance)
    jaccard: str = "plain"
    eps: float = 0.6
    min_samples: int = 4
    knn: str = "auto"  # auto (faiss, approximate, from 250,000 samples) | exact | faiss
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
    augment: str = "cluster_contrast"  # cluster_contrast | rsl | none
    # SFE-CR ablation switches
    sfe: bool = True  # per-camera clustering on foreground features (else on input features)
    cr: bool = True  # camera-aware re-allocation on/off
    global_features: str = "input"  # input | foreground | fused


@dataclass
class CameraConfig:
    """Camera-aware learning (method ``cap``; see unreid/methods/cap.py for the defaults)."""

    # camera-aware proxies (CAP): false = one centroid per cluster, as cluster-contrast
    proxies: bool = True
    temperature: float = 0.07  # of the intra- and inter-camera proxy losses
    momentum: float = 0.2  # proxy memory update
    inter_weight: float = 0.5  # weight of the inter-camera loss; 0 = off
    inter_start_epoch: int = 5  # first (0-based) epoch with the inter-camera loss
    hard_negatives: int = 50  # proxies of other identities in the inter-camera loss
    own_camera_positive: bool = True  # the own camera's identity proxy is a positive too
    proxy_sampler: bool = True  # batches of P proxies x K images (else P pseudo-identities)
    # online cross-camera association: extra inter-camera positives
    associate: bool = False
    assoc_mutual: bool = True  # the proxies must be each other's nearest across the cameras
    assoc_min_similarity: float = -1.0  # and/or cosine >= this (-1 = no threshold)
    # added to assoc_min_similarity per epoch after inter_start_epoch (clipped to [-1, 1]):
    # > 0 tightens the gate as the features become more trustworthy, < 0 loosens it
    assoc_similarity_step: float = 0.0
    # and/or the candidate beats its camera's runner-up proxy by this cosine (0 = off)
    assoc_margin: float = 0.0
    # CA-Jaccard (cluster.jaccard=camera_aware)
    k1_intra: int = 5
    k1_inter: int = 20
    k2_intra: int = 2
    k2_inter: int = 4
    # per-camera feature standardisation: of the features that are clustered (cap), and
    # of the query and gallery features at evaluation (any method)
    standardize: bool = False
    standardize_test: bool = False
    # camera-specific batch-norm statistics (unreid/models/camera_bn.py): each camera's
    # images are extracted with BN statistics re-estimated from that camera's images alone;
    # of the training images whose features are clustered (any method), and of the query
    # and gallery at evaluation (each camera's query and gallery images together)
    bn: bool = False
    bn_test: bool = False
    # camera-based BN in training: each camera's rows of a training batch are normalised
    # with their own batch statistics (the batch is sorted by camera; a camera with one row
    # joins a neighbour). Pairs with bn / bn_test, which give extraction the same per-camera
    # normalisation.
    bn_train: bool = False


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
    # auto | market | all-gallery (same-camera matches count; the query image itself does
    # not): auto picks all-gallery, with a note, when query and gallery hold one camera
    protocol: str = "auto"
    rerank: bool = False
    batch_size: int = 128
    max_rank: int = 50


@dataclass
class RunConfig:
    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto | fp32 | bf16 | fp16 (CUDA only); auto decides per phase (unreid.models.precision)
    precision: str = "auto"
    deterministic: bool = True
    report: bool = True  # write the HTML report at the end of training
    # mid-epoch checkpoints (RUN_DIR/checkpoint_step.pt) so a killed run loses < 1 epoch
    checkpoint_steps: int = 0  # every N training steps (0 = off)
    checkpoint_minutes: float = 10.0  # and/or every M minutes of training (0 = off)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_config(
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
) -> Config:
    """Defaults, then each YAML file in order (with its ``_base_`` files), then overrides.

    Args:
        files: YAML files merged left to right; each file's ``_base_`` (a path or a
            list of paths, relative to that file) is merged just before its own keys.
        overrides: ``key=value`` strings (``cluster.eps=0.6``), applied last.

    Returns a typed :class:`Config` (an OmegaConf structured config object that
    behaves like the dataclass) whose values are checked by :func:`validate_config`;
    keys left unset (``data.root`` without a file or override naming it) stay
    unset, for a caller to fill before :func:`validate_config` with
    ``allow_missing=False`` (what ``train`` calls). Raises :class:`ConfigError` with
    the offending file (and line) or key on a typo, a wrong type, a YAML syntax
    error, a ``_base_`` cycle, a malformed override or an out-of-range value.
    """
    merged = OmegaConf.structured(Config)
    hand_set: set[str] = set()  # cluster keys some file or override sets
    for path in files:
        merged = _merge_file(merged, Path(path), (), hand_set)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. cluster.eps=0.6")
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides))
        merged = OmegaConf.merge(merged, dotlist)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"--set: {first_line(exc)}") from None
    hand_set |= _cluster_keys(dotlist)
    if "auto" not in hand_set and not hand_set & set(AUTO_KNOBS):
        merged.cluster.auto = True  # nothing hand-set: let the data choose
    validate_config(merged, allow_missing=True)  # type: ignore[arg-type]
    return merged  # type: ignore[return-value]


def recipe_path(name: str) -> Path:
    """The YAML file of a recipe shipped with the package (``unreid/recipes/NAME.yaml``)."""
    path = RECIPES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        raise ConfigError(f"no recipe {name!r} in {RECIPES}: use one of {known}")
    return path


def _cluster_keys(node: Any) -> set[str]:
    """The keys a (file's or override's) mapping sets in its ``cluster`` section."""
    section = node.get("cluster") if isinstance(node, DictConfig) else None
    return {str(k) for k in section} if isinstance(section, DictConfig) else set()


def _merge_file(merged: DictConfig, path: Path, chain: tuple[Path, ...],
                hand_set: set[str] | None = None) -> DictConfig:
    """``merged`` + the ``_base_`` files of ``path`` (in order) + ``path``'s own keys.

    ``chain`` holds the files whose ``_base_`` led here, to refuse a cycle; the ``cluster``
    keys each file sets are added to ``hand_set``.
    """
    if not path.is_file():
        named = f" (named in {chain[-1]}'s {BASE_KEY})" if chain else ""
        raise ConfigError(f"config file {path} not found{named}: pass an existing YAML file")
    key = path.resolve()
    if key in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{BASE_KEY} cycle: {cycle}: remove one of these {BASE_KEY} entries")
    own = _read_yaml(path)
    bases: Any = own.pop(BASE_KEY, [])
    if isinstance(bases, ListConfig):
        bases = OmegaConf.to_container(bases)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(
            f"{path}: {BASE_KEY} must be a file name or a list of file names, got {bases!r}"
        )
    for base in bases:
        merged = _merge_file(merged, path.parent / base, (*chain, path), hand_set)
    if hand_set is not None:
        hand_set |= _cluster_keys(own)
    try:
        return OmegaConf.merge(merged, own)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {first_line(exc)}") from None


def _read_yaml(path: Path) -> DictConfig:
    """The mapping at the top of a YAML file; a syntax error is one line with its line number."""
    try:
        data = OmegaConf.load(path)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text: save the config as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror}): check its permissions") \
            from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        what = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            # where the broken construct began, e.g. an unclosed [ lines earlier
            what += f" ({exc.context} from line {exc.context_mark.line + 1})"
        raise ConfigError(f"{path}{where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {first_line(exc)}") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: a config is a mapping of sections (data:, model:, ...), "
                          "not a list")
    return data


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class Rule:
    """The allowed values of one key: ``check(value)`` is True when ``value`` is allowed,
    ``allowed`` says which (the second half of the error line)."""

    check: Callable[[Any], bool]
    allowed: str


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _interval(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
              hi_open: bool = False, integer: bool = False) -> Rule:
    """Numbers in an interval (finite; integers when ``integer``), e.g. ``(0, 1]``."""

    def check(v: Any) -> bool:
        if not _number(v, integer):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))

    kind = "an integer" if integer else "a finite number"
    if lo is not None and hi is not None:
        allowed = f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        allowed = f"{kind} {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        allowed = f"{kind} {'<' if hi_open else '<='} {hi:g}"
    else:
        allowed = kind
    return Rule(check, allowed)


def _one_of(*choices: str | int) -> Rule:
    return Rule(lambda v: not isinstance(v, bool) and v in choices,
                f"one of {', '.join(str(c) for c in choices)}")


def _matches(pattern: str, allowed: str) -> Rule:
    regex = re.compile(pattern)
    return Rule(lambda v: isinstance(v, str) and regex.fullmatch(v) is not None, allowed)


_POSITIVE_INT = _interval(1, integer=True)
_COUNT = _interval(0, integer=True)  # 0 has a meaning (off, or estimate from the data)
_SHARE = _interval(0, 1, lo_open=True)  # a threshold or share that 0 would make empty
_LAYOUT = _one_of("auto", "market", "msmt17", "folder")  # data.layout, source.layout


def _is_roots(value: Any) -> bool:
    """A ``data.root`` / ``source.root`` value: None (unset), a non-empty string, or a
    non-empty list of them."""
    if value is None or (isinstance(value, str) and value != ""):
        return True
    return (isinstance(value, list | ListConfig) and len(value) > 0
            and all(isinstance(r, str) and r for r in value))


# The allowed values of every checked key. Names that registries resolve at run time
# (method.name, model.backbone) are left to the registry, which names the choices when
# it is asked: a plug-in may register more before train() runs. The string choices
# repeat the owning modules' tuples because importing those would pull in torch; a
# test keeps the two equal.
RULES: dict[str, Rule] = {
    "data.root": Rule(_is_roots, "a folder, synth:default, or a non-empty list of folders"),
    "data.layout": _LAYOUT,
    "data.height": _POSITIVE_INT,
    "data.width": _POSITIVE_INT,
    "source.root": Rule(_is_roots,
                        "a labelled dataset folder, a non-empty list of them, or null (off)"),
    "source.layout": _LAYOUT,
    "source.weight": _interval(0, lo_open=True),
    "model.last_stride": _one_of(1, 2),
    "model.pooling": _one_of("avg", "gem"),
    "model.dropout": _interval(0, 1, hi_open=True),
    "model.feature": _one_of("auto", "bn", "pool"),
    "cluster.k1": _POSITIVE_INT,
    "cluster.k2": _POSITIVE_INT,
    "cluster.eps": _SHARE,  # a Jaccard distance is in [0, 1]
    "cluster.min_samples": _POSITIVE_INT,
    "cluster.knn": _one_of("auto", "exact", "faiss"),
    "cluster.local_eps": _SHARE,
    "cluster.local_min_samples": _POSITIVE_INT,
    "cluster.delta": _interval(0, lo_open=True),  # > 1 turns re-allocation off
    "cluster.num_classes": _COUNT,
    "cluster.per_camera_k": _COUNT,
    "cluster.lambda_": _SHARE,  # a cosine threshold: above 1 nothing is selected
    "cluster.min_selected": _interval(0, 1),
    "cluster.soft_temperature": _interval(0, lo_open=True),
    "cluster.lambda_step": _interval(0),
    "cluster.jaccard": _one_of("plain", "camera_aware"),
    "camera.temperature": _interval(0, lo_open=True),
    "camera.momentum": _interval(0, 1),
    "camera.inter_weight": _interval(0),
    "camera.inter_start_epoch": _COUNT,
    "camera.hard_negatives": _POSITIVE_INT,
    "camera.assoc_min_similarity": _interval(-1, 1),
    "camera.assoc_similarity_step": _interval(-2, 2),
    "camera.assoc_margin": _interval(0, 2),
    "camera.k1_intra": _COUNT,
    "camera.k1_inter": _COUNT,
    "camera.k2_intra": _POSITIVE_INT,
    "camera.k2_inter": _COUNT,
    "masks.provider": _one_of("none", "synthetic", "png", "mediapipe"),
    "masks.noise": _interval(0, 1),
    "method.temperature": _interval(0, lo_open=True),
    "method.momentum": _interval(0, 1),
    "method.label_smoothing": _interval(0, 1, hi_open=True),
    "method.soft_weight": _interval(0),
    "method.augment": _one_of("cluster_contrast", "rsl", "none"),
    "method.global_features": _one_of("input", "foreground", "fused"),
    "optim.lr": _interval(0, lo_open=True),
    "optim.weight_decay": _interval(0),
    "optim.warmup_epochs": _COUNT,
    "optim.warmup_factor": _SHARE,
    "optim.step_size": _COUNT,  # 0 = no step decay
    "optim.gamma": _SHARE,
    "optim.epochs": _POSITIVE_INT,
    "optim.iters": _POSITIVE_INT,
    "optim.num_instances": _POSITIVE_INT,
    "optim.num_identities": _POSITIVE_INT,
    "eval.batch_size": _POSITIVE_INT,
    "eval.protocol": _one_of("auto", "market", "all-gallery"),
    "eval.max_rank": _POSITIVE_INT,
    "run.device": _matches(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"),
    "run.precision": _one_of("auto", "fp32", "bf16", "fp16"),
    "run.checkpoint_steps": _COUNT,
    "run.checkpoint_minutes": _interval(0),
}


def check_value(key: str, value: Any, name: str | None = None) -> None:
    """Raise a one-line :class:`ConfigError` when ``value`` is not allowed for ``key``.

    ``name`` is how the user spelled the setting (a CLI flag such as ``--batch-size``
    for ``eval.batch_size``); it defaults to the key.
    """
    rule = RULES[key]
    if not rule.check(value):
        raise ConfigError(f"{name or key}={value!r} is not allowed: use {rule.allowed}")


def validate_config(cfg: Config, *, allow_missing: bool = False) -> Config:
    """Check every value of ``cfg`` against :data:`RULES` before any work starts.

    Args:
        cfg: a config from :func:`load_config` (or a plain :class:`Config`).
        allow_missing: accept keys that are still unset (``data.root``), for a
            config that a caller completes later; ``train`` passes False.

    Returns ``cfg`` unchanged. Raises :class:`ConfigError`: one line naming each bad
    key, its value and the allowed range (several problems are joined with ``;``); with
    ``allow_missing=False`` also each ``source.root`` entry that is not a folder.
    """
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    problems = []
    if not allow_missing:
        for key in sorted(OmegaConf.missing_keys(node)):
            if key == "data.root":
                problems.append(
                    "data.root is not set: name the dataset folder with --set data.root=PATH "
                    "(or synth:default for the synthetic world), or pass a --config that sets it"
                )
            else:
                problems.append(f"{key} is not set: give it a value with --set {key}=...")
    for key, rule in RULES.items():
        value = OmegaConf.select(node, key, throw_on_missing=False)
        if not rule.check(value):
            problems.append(f"{key}={value!r} is not allowed: use {rule.allowed}")
    if not allow_missing:  # a run is about to start: its source folders must be there
        problems += _absent_source_roots(OmegaConf.select(node, "source.root"))
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def _absent_source_roots(root: Any) -> list[str]:
    """One problem line per entry of ``source.root`` that is not a folder (a malformed value
    is the rule's problem, not this one's)."""
    if root is None or not RULES["source.root"].check(root):
        return []
    from unreid.data.roots import missing_folders  # the data package only when a run starts

    return missing_folders(root, "source.root", "give the labelled source dataset's folder, "
                           "or leave source.root unset to train on the target alone")


def to_container(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of a config (for JSON logs and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


# Keys older versions stored that no longer exist: (section, key). ``run.amp`` (fp16 on
# CUDA) became ``run.precision``, whose ``auto`` does the same on CUDA.
RETIRED_KEYS = (("run", "amp"),)


def config_from_dict(values: dict[str, Any]) -> Config:
    """A typed :class:`Config` from the plain dict stored in a checkpoint (keys an older
    unreid stored and this one retired are dropped)."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for section, key in RETIRED_KEYS:
        if isinstance(values.get(section), dict):
            values[section].pop(key, None)
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), values)  # type: ignore[return-value]
    except Exception as exc:
        raise ConfigError(
            f"stored config does not fit this unreid version: {first_line(exc)}"
        ) from None


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run really used)."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True))


