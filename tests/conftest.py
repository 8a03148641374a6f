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


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic world (24 identities, half for training; 3 cameras; 8 images
    each at 64x32), generated once per test session (per xdist worker)."""
    from unreid.data.synth import SynthConfig, generate_world

    cfg = SynthConfig(
        ids=24, cameras=3, images_per_id=8, height=64, width=32, seed=0, occluders=0.0,
        distractors=8,
    )
    return Path(generate_world(cfg, tmp_path_factory.mktemp("tiny_world"), progress=False))
