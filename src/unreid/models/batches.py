"""Where a model runs and how rows of decoded images reach it: the one batch reader of
feature extraction and of the camera BN statistics pass."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["model_device", "read_rows"]


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are (CPU for a model without any)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def read_rows(array: np.ndarray, rows: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Rows ``rows`` (increasing for the fast path) of a (possibly memory-mapped, read-only)
    array as a float32 tensor on ``dev``.

    Consecutive rows are read as one slice (a slice of a memmap reads only those rows);
    either way they are copied into writable memory, since torch refuses read-only buffers.
    On CUDA the copy goes through pinned memory, asynchronously.
    """
    a, b = int(rows[0]), int(rows[-1]) + 1
    contiguous = b - a == len(rows) and bool(np.all(np.diff(rows) == 1))
    chunk = np.array(array[a:b] if contiguous else array[rows])
    t = torch.from_numpy(chunk)
    if dev.type == "cuda":
        t = t.pin_memory().to(dev, non_blocking=True)
    return t.float()
