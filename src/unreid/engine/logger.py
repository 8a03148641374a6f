"""Run logs: ``metrics.jsonl`` (one JSON line per epoch), console lines, tqdm, TensorBoard.

Only rank 0 writes; other ranks get a disabled logger. ``metrics.jsonl`` is
rewritten atomically from the checkpoint's records when a run resumes, so
every epoch appears exactly once however the previous process died.
TensorBoard scalars are written when the ``tensorboard`` package is installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unreid.io import atomic_write_text
from unreid.progress import progress_bar

__all__ = ["RunLogger", "jsonable", "progress"]

METRICS = "metrics.jsonl"


def jsonable(value: Any) -> Any:
    """Plain JSON types from numpy / torch scalars, arrays and nested containers.

    NaN and inf become None (JSON has no NaN).
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    elif isinstance(value, np.ndarray) or hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, leave: bool = False) -> tqdm:
    """A tqdm bar that stays quiet when stderr is not a terminal (logs, CI) or when disabled."""
    return progress_bar(iterable, total=total, desc=desc, enabled=enabled, leave=leave)


class RunLogger:
    """Writes a run's ``metrics.jsonl``, ``log.txt`` and TensorBoard events (rank 0 only)."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True,
                 tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the JSON lines suffice
                pass
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS

    def info(self, message: str) -> None:
        """Print a line (rank 0) and append it to ``log.txt``."""
        if not self.enabled:
            return
        tqdm.write(message)
        with open(self.run_dir / "log.txt", "a") as fh:
            fh.write(message + "\n")

    def write(self, record: dict[str, Any]) -> None:
        """Append one epoch's record as a JSON line (and its scalars to TensorBoard)."""
        if not self.enabled:
            return
        line = json.dumps(jsonable(record), sort_keys=False)
        with open(self.metrics_path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
        if self._tb is not None:
            step = int(record.get("epoch", 0))
            for key, value in _flatten(record).items():
                if key != "epoch":
                    self._tb.add_scalar(key.replace(".", "/"), value, step)
            self._tb.flush()

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` by exactly ``records`` (atomic), e.g. on resume."""
        if not self.enabled:
            return
        atomic_write_text(
            self.metrics_path, "".join(json.dumps(jsonable(r)) + "\n" for r in records)
        )

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out
