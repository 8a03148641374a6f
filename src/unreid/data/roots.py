"""Where a run's images come from: ``data.root`` -> a dataset -> decoded splits.

``data.root`` is a dataset folder, or ``synth:default`` / ``synth:quick`` for
the generated synthetic world (built once, cached under ``synth/`` of the
per-user cache), or a list of them: several labelled roots trained as one table
with identities and cameras kept apart, evaluated on the first root's
query/gallery (:func:`unreid.data.dataset.merge_datasets`).
Training and the applications (evaluate, extract, search) load their data
through these functions, so a root means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unreid.data.dataset import Dataset, load_dataset, merge_datasets
from unreid.data.images import load_images
from unreid.data.synth import default_world
from unreid.errors import ConfigError, DataError

if TYPE_CHECKING:
    from unreid.config import Config

__all__ = [
    "SYNTH_PREFIX",
    "data_roots",
    "load_run_dataset",
    "missing_folders",
    "resolve_data_root",
    "resolve_data_roots",
    "split_images",
]

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

        return Path(default_world(quick=kind == "quick"))
    return Path(root)


def data_roots(root: str | Sequence[str]) -> list[str]:
    """``data.root`` as a list of root strings (one entry for a single root)."""
    if isinstance(root, str | Path):
        return [str(root)]
    return [str(r) for r in root]


def resolve_data_roots(root: str | Sequence[str], key: str = "data.root") -> list[Path]:
    """Every entry of ``data.root`` (or of the setting ``key``, e.g. ``source.root``) -> a
    dataset folder (:func:`resolve_data_root`).

    Raises:
        DataError: an entry of a list that is not an existing folder (one line naming
            the entry, so that one bad root of several is easy to find).
    """
    entries = data_roots(root)
    if not entries:
        raise ConfigError(f"{key}=[] names no dataset: give a folder or a list of folders")
    if len(entries) > 1 and (missing := missing_folders(
            root, key, f"fix that entry of the {key} list or remove it")):
        raise DataError(missing[0])
    return [resolve_data_root(r) for r in entries]


def missing_folders(root: str | Sequence[str], key: str, fix: str) -> list[str]:
    """One problem line per entry of ``root`` (the setting ``key``) that is not an existing
    folder, ending in ``fix``; ``synth:`` worlds are generated on demand, so never missing.
    Reads only the file system (no dataset is loaded), so a config is checked cheaply."""
    single = isinstance(root, str | Path)  # named as the setting, a list entry by index
    problems = []
    for i, entry in enumerate(data_roots(root)):
        path = Path(entry)
        if entry.startswith(SYNTH_PREFIX) or path.is_dir():
            continue
        name = key if single else f"{key}[{i}]"
        where = "" if path.is_absolute() else f" (from {Path.cwd()}: {path.absolute()})"
        problems.append(f"{name}={entry} is not a folder{where}: {fix}")
    return problems


def load_run_dataset(cfg: Config, *, root: Any = None, layout: str | None = None,
                     key: str = "data.root") -> Dataset:
    """The :class:`unreid.data.Dataset` of ``cfg.data``: one root, or several merged.

    ``root`` (str or list, e.g. ``cfg.source.root``) and ``layout`` load another labelled
    root the same way, named ``key`` in errors; ``data.camera_regex`` and ``data.csv``
    describe ``data.root``'s folder and apply to it only.
    """
    d = cfg.data
    own = root is None
    return merge_datasets([
        load_dataset(folder, layout=d.layout if layout is None else layout,
                     camera_regex=d.camera_regex if own else None, csv=d.csv if own else None)
        for folder in resolve_data_roots(d.root if own else root, key)
    ])


def split_images(table: Any, cfg: Config, *, progress: bool = True) -> np.ndarray:
    """(N, 3, H, W) uint8 images of a split at the configured size (memmap when cached)."""
    return load_images(
        list(table.paths),
        int(cfg.data.height),
        int(cfg.data.width),
        cache_dir=cfg.data.cache_dir or None,
        progress=progress,
    )
