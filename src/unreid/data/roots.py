"""Where a run's images come from: ``data.root`` -> a dataset -> decoded splits.

``data.root`` is a dataset folder, or ``synth:default`` / ``synth:quick`` for
the generated synthetic world (built once, cached under ``synth/`` of the
per-user cache).
Training and the applications (evaluate, extract, search) load their data
through these functions, so a root means the same thing everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unreid.errors import ConfigError

if TYPE_CHECKING:
    from unreid.config import Config
    from unreid.data.dataset import Dataset

__all__ = ["SYNTH_PREFIX", "load_run_dataset", "resolve_data_root", "split_images"]

SYNTH_PREFIX = "synth:"


def resolve_data_root(root: str) -> Path:
    """``data.root`` -> a dataset folder; ``synth:default`` / ``synth:quick`` generate
    (once, cached under ``synth/`` of the per-user cache) the synthetic world of
    :mod:`unreid.data.synth`."""
    root = str(root)
    if root.startswith(SYNTH_PREFIX):
        kind = root[len(SYNTH_PREFIX):]
        if kind not in ("default", "quick"):
            raise ConfigError(f"data.root={root!r}: use synth:default, synth:quick or a folder")
        from unreid.data.synth import default_world

        return Path(default_world(quick=kind == "quick"))
    return Path(root)


def load_run_dataset(cfg: Config) -> Dataset:
    """The :class:`unreid.data.Dataset` of ``cfg.data``."""
    from unreid.data import load_dataset

    d = cfg.data
    return load_dataset(
        resolve_data_root(d.root), layout=d.layout, camera_regex=d.camera_regex, csv=d.csv
    )


def split_images(table: Any, cfg: Config, *, progress: bool = True) -> np.ndarray:
    """(N, 3, H, W) uint8 images of a split at the configured size (memmap when cached)."""
    from unreid.data.images import load_images

    return load_images(
        list(table.paths),
        int(cfg.data.height),
        int(cfg.data.width),
        cache_dir=cfg.data.cache_dir or None,
        progress=progress,
    )
