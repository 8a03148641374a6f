"""Shared fixtures. Tests run with two xdist workers on two cores, so each
worker keeps torch to one thread: oversubscription makes everything slower."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parents[1]
CUHK03 = REPO.parent / "shared" / "data" / "cuhk03-detected"


@pytest.fixture(scope="session")
def cuhk03_root() -> Path:
    if not CUHK03.is_dir():
        pytest.skip(f"real data not present at {CUHK03}")
    return CUHK03
