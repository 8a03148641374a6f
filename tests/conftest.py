"""Shared fixtures. Tests run with two xdist workers on two cores, so each
worker keeps torch to one thread: oversubscription makes everything slower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TRANSFER, tiny_cfg

from unreid.data.synth import SynthConfig, generate_world
from unreid.engine import train

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CUHK03 = REPO.parent / "shared" / "data" / "cuhk03-detected"


@pytest.fixture(scope="session", autouse=True)
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """Decoded images and worlds of runs with the default ``data.cache_dir: auto`` go to
    a session folder, not the per-user cache of whoever runs the tests."""
    patch = pytest.MonkeyPatch()
    patch.setenv("UNREID_CACHE", str(tmp_path_factory.mktemp("unreid-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def cuhk03_root() -> Path:
    if not CUHK03.is_dir():
        pytest.skip(f"real data not present at {CUHK03}")
    return CUHK03


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic world (24 identities, half for training; 3 cameras; 8 images
    each at 64x32), generated once per test session (per xdist worker)."""
    cfg = SynthConfig(
        ids=24, cameras=3, images_per_id=8, height=64, width=32, seed=0, occluders=0.0,
        distractors=8,
    )
    return Path(generate_world(cfg, tmp_path_factory.mktemp("tiny_world"), progress=False))


@pytest.fixture(scope="session")
def source_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkpoint.pt of tiny_cnn trained with labels on another synthetic world (world
    seed 1: other people, other camera scenes; ~6 s), the starting point of the transfer
    tests; trained once per session (per xdist worker)."""
    base = tmp_path_factory.mktemp("source-model")
    world = generate_world(
        SynthConfig(ids=48, cameras=3, images_per_id=8, height=64, width=32, seed=1,
                    occluders=0.0, distractors=8),
        base / "world", progress=False,
    )
    cfg = tiny_cfg(Path(world), base / "run", *TRANSFER, "method.name=supervised",
                   "optim.epochs=8")
    return train(cfg).run_dir / "checkpoint.pt"
