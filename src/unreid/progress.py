"""The one progress-bar factory of unreid: tqdm, quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 enabled: bool = True, leave: bool = True, unit: str = "it") -> tqdm:
    """A tqdm bar, disabled when ``enabled`` is False or stderr is not a TTY (logs, CI)."""
    quiet = (not enabled) or not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=quiet, leave=leave, unit=unit,
                dynamic_ncols=True)
