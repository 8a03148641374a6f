"""The source model a run starts from (``model.pretrained=PATH`` of another unreid run).

RSL and PUL start from "a model fine-tuned on an irrelevant labelled dataset", and
most users adapt a model trained on public labelled re-ID data to their own footage:
the start is a checkpoint of another run. This module describes such a start as
data: which file (path and sha256), what it was trained on (method and data roots)
and how well it did on its own query/gallery (the last evaluation in its records),
so a run folder records it (``source.json``, which the report reads to show it
beside the adapted numbers). A bare state dict (no run behind it) is described by
path and hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unreid.io import atomic_write_text
from unreid.models.weights import read_weights_file

__all__ = [
    "SOURCE_JSON",
    "SourceModel",
    "describe_source",
    "file_sha256",
    "is_weights_path",
    "source_model_overrides",
    "write_source_record",
]

SOURCE_JSON = "source.json"  # in a run folder that started from another run's weights
MODEL_KEYS = ("backbone", "pooling", "last_stride")  # what a source fixes about the model


@dataclass(frozen=True)
class SourceModel:
    """A start checkpoint, described.

    Attributes:
        path: absolute path of the file.
        sha256: hex digest of the file's bytes.
        method: ``method.name`` of the run that wrote it (None for a bare state dict).
        data_roots: that run's ``data.root`` entries (training data; the first root's
            query/gallery gave ``eval``).
        model: that run's ``model.backbone``, ``model.pooling``, ``model.last_stride``.
        feature_dim: D of its features (from the checkpoint's model signature).
        epochs: finished training epochs stored in the file.
        eval: the last evaluation in its records (``mAP``, ``R1``, ... as fractions) on its
            own first root, or None when it logged none.
        eval_epoch: the epoch of ``eval`` (0 = before training); below ``epochs`` when the
            run did not evaluate its last epochs (or the file is a mid-epoch checkpoint
            whose last evaluation is of an earlier state).
    """

    path: str
    sha256: str
    method: str | None = None
    data_roots: tuple[str, ...] = ()
    model: dict[str, Any] | None = None
    feature_dim: int | None = None
    epochs: int | None = None
    eval: dict[str, Any] | None = None
    eval_epoch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_roots"] = list(self.data_roots)
        return out


def is_weights_path(pretrained: str) -> bool:
    """True when ``model.pretrained`` names a file (not ``none`` / ``imagenet``)."""
    return str(pretrained) not in ("none", "imagenet")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_source(path: str | Path) -> SourceModel:
    """Read ``path`` (an unreid checkpoint or a state dict) into a :class:`SourceModel`.

    Raises:
        WeightsError: missing or unreadable file.
    """
    path = Path(path).expanduser().resolve()
    _, facts = read_weights_file(path)
    config = facts.get("config") or {}
    roots = (config.get("data") or {}).get("root")
    roots = () if roots is None else (roots,) if isinstance(roots, str) else tuple(roots)
    model_cfg = config.get("model") or {}
    signature = facts.get("model_signature") or {}
    evals = [r for r in facts.get("records") or () if isinstance(r.get("eval"), dict)]
    return SourceModel(
        path=str(path),
        sha256=file_sha256(path),
        method=(config.get("method") or {}).get("name"),
        data_roots=tuple(str(r) for r in roots),
        model={k: model_cfg[k] for k in MODEL_KEYS if k in model_cfg} or None,
        feature_dim=signature.get("feature_dim"),
        epochs=facts.get("epoch"),
        eval=evals[-1]["eval"] if evals else None,
        eval_epoch=evals[-1].get("epoch") if evals else None,
    )


def source_model_overrides(path: str | Path) -> list[str]:
    """``model.backbone=...``, ``model.pooling=...``, ``model.last_stride=...`` of the run
    that wrote ``path``, so a config built elsewhere (a benchmark's) builds a model the
    source's weights fit. Empty for a bare state dict."""
    model = describe_source(path).model or {}
    return [f"model.{k}={model[k]}" for k in MODEL_KEYS if k in model]


def write_source_record(pretrained: str, run_dir: str | Path) -> Path | None:
    """Write ``RUN_DIR/source.json`` describing ``model.pretrained`` when it is a file.

    Returns the JSON path, or None for ``none`` / ``imagenet`` starts (nothing written).
    """
    if not is_weights_path(pretrained):
        return None
    record = describe_source(pretrained).as_dict()
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    return atomic_write_text(Path(run_dir) / SOURCE_JSON, text)
