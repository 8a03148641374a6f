"""Checkpoints: atomic writes, safe loads, and one-line errors for mismatches.

A run folder holds two files:

- ``checkpoint.pt``: the state after the last *finished* epoch. It is only
  replaced when an epoch ends, so it is the "last good" state whatever
  happens mid-epoch; ``unreid eval`` / ``extract`` read it.
- ``checkpoint_step.pt``: a mid-epoch state (written every
  ``run.checkpoint_steps`` steps or ``run.checkpoint_minutes``), with the
  epoch's pseudo-labels and the step index, removed once the epoch ends. A
  run killed mid-epoch resumes from it and loses less than one epoch.

Every checkpoint carries ``format``, the version of its layout: 2 adds
``model_feature`` and the hooks' state to format 1. A checkpoint of a newer
(or unknown) format is refused with one line rather than misread.

Everything stored is a tensor, dict, list, str, int, float, bool or None, so
``torch.load(..., weights_only=True)`` reads it: configs are plain dicts,
numpy arrays become tensors.
"""

from __future__ import annotations

import errno
import hashlib
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from unreid.errors import ConfigError, TrainingError, WeightsError
from unreid.io import atomic_write, load_plain

__all__ = [
    "CHECKPOINT",
    "FORMAT",
    "STEP_CHECKPOINT",
    "check_format",
    "check_model_signature",
    "check_resume_config",
    "config_differences",
    "get_rng_state",
    "load_checkpoint",
    "model_signature",
    "non_finite_parameters",
    "resolve_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT = "checkpoint.pt"
STEP_CHECKPOINT = "checkpoint_step.pt"
FORMAT = 2  # the newest checkpoint layout this version writes and reads


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically and fsync'ed (:func:`unreid.io.atomic_write`).

    A reader (or a crash) never sees a half-written checkpoint.

    Raises:
        TrainingError: the disk is full (the previous file at ``path`` is kept).
    """
    try:
        return atomic_write(path, lambda tmp: torch.save(state, tmp), fsync=True)
    except (OSError, RuntimeError) as exc:
        if not _disk_full(exc):
            raise
        raise TrainingError(f"no space left in {Path(path).parent}; the last checkpoint is "
                            "kept") from None


def _disk_full(exc: BaseException | None) -> bool:
    """ENOSPC / EDQUOT anywhere in the chain (torch's writer wraps the OSError)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder -> its ``checkpoint.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise WeightsError(
            f"checkpoint {path} not found: pass a checkpoint.pt or the RUN_DIR of a training run"
        )
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = resolve_checkpoint(path)
    state = load_plain(path, name="checkpoint", plain="a plain unreid checkpoint",
                       map_location=map_location)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise WeightsError(f"{path} is not an unreid checkpoint (no model/config entries)")
    check_format(state.get("format", 1), path)
    return state


def check_format(found: Any, path: Path) -> None:
    """One-line :class:`WeightsError` unless ``found`` is a layout this version reads."""
    if isinstance(found, int) and not isinstance(found, bool) and 1 <= found <= FORMAT:
        return
    raise WeightsError(
        f"checkpoint {path} has format {found!r}, this unreid reads formats 1 to {FORMAT}: "
        "read it with the unreid version that wrote it (its unreid_version entry) or upgrade"
    )


def model_signature(model: nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's weights fit: the backbone settings and a hash of names and shapes.

    Computed on the model as built (before any classifier of a method is
    attached), so it does not depend on the epoch's number of classes.
    """
    items = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    digest = hashlib.sha1(repr(items).encode()).hexdigest()[:16]
    m = config.get("model", {})
    return {
        "backbone": str(m.get("backbone")),
        "feature_dim": int(getattr(model, "feature_dim", -1)),
        "pooling": str(m.get("pooling")),
        "last_stride": int(m.get("last_stride", -1)),
        "tensors": digest,
    }


def check_model_signature(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """One-line :class:`WeightsError` when a checkpoint was written for another model."""
    if saved == current:
        return

    def show(s: dict[str, Any]) -> str:
        return (
            f"{s.get('backbone')} (feature dim {s.get('feature_dim')}, "
            f"{s.get('pooling')} pooling)"
        )

    what = (
        f"{show(saved)}, the config builds {show(current)}"
        if show(saved) != show(current)
        else "a model with other layer shapes than the config builds"
    )
    raise WeightsError(
        f"checkpoint {path} holds {what}: use the model.* settings of its run (its config.yaml)"
    )


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, name + ".")
        elif va != vb:
            out.append(name)
    return out


def check_resume_config(
    saved: dict[str, Any], current: dict[str, Any], path: Path, allowed: tuple[str, ...]
) -> None:
    """One-line :class:`ConfigError` when resuming with settings that change the run.

    ``allowed`` are dotted prefixes that may change (e.g. ``optim.epochs`` to
    extend a run, ``run.device``, ``eval.``).
    """
    diff = [k for k in config_differences(saved, current) if not k.startswith(allowed)]
    if diff:
        shown = ", ".join(f"{k}={_get(current, k)!r} (run: {_get(saved, k)!r})" for k in diff[:3])
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise ConfigError(
            f"cannot resume {path}: the config differs in {shown}{more}; resume with the run's "
            "config (omit --config) or start a new run.out_dir"
        )


def _get(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def get_rng_state() -> dict[str, Any]:
    """Global RNG states of torch, numpy and Python as tensors, lists and ints."""
    # The legacy global numpy state: unreid itself uses seeded Generators, but
    # third-party code called during training may draw from it.
    # (the legacy=True form: a tuple, which numpy's stubs do not tell apart from the dict)
    np_state = cast(tuple[Any, ...], np.random.get_state())  # noqa: NPY002
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
         n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def non_finite_parameters(model: nn.Module) -> list[str]:
    """Names of parameters holding NaN or inf (empty when all are finite)."""
    return [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
