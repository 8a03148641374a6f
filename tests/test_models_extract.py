"""extract_features: batching, masks, memory-mapped input, index subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unreid.config import ModelConfig
from unreid.models import build_model, extract_feature_sets, extract_features

N, H, W = 10, 64, 32


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone="tiny_cnn"))
    with torch.no_grad():
        m.train()(torch.rand(8, 3, H, W))  # non-trivial BN statistics
    return m


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(N, 3, H, W), dtype=np.uint8)


def memmap_of(array: np.ndarray, path: Path) -> np.memmap:
    mm = np.memmap(path, dtype=array.dtype, mode="w+", shape=array.shape)
    mm[:] = array
    mm.flush()
    del mm
    return np.memmap(path, dtype=array.dtype, mode="r", shape=array.shape)


class SliceRecorder(np.ndarray):
    """An array that records how many rows each read takes."""

    reads: list[int]

    def __getitem__(self, item):
        out = super().__getitem__(item)
        if isinstance(out, np.ndarray) and out.ndim == 4:
            self.reads.append(len(out))
        return np.asarray(out)


def test_features_equal_the_eval_forward_and_are_unit_rows(model, images) -> None:
    feats = extract_features(model, images, batch_size=4, progress=False)
    assert feats.shape == (N, 96) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(N))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images).float() / 255)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)


def test_all_ones_masks_change_nothing_on_memmap_input(model, images, tmp_path: Path) -> None:
    mm = memmap_of(images, tmp_path / "images.u8")
    plain = extract_features(model, mm, batch_size=4, progress=False)
    ones_u8 = memmap_of(np.full((N, 1, H, W), 255, np.uint8), tmp_path / "masks.u8")
    ones_f = np.ones((N, 1, H, W), np.float32)
    assert torch.equal(extract_features(model, mm, batch_size=4, masks=ones_u8, progress=False),
                       plain)
    assert torch.equal(extract_features(model, mm, batch_size=4, masks=ones_f, progress=False),
                       plain)
    assert torch.equal(extract_features(model, images, batch_size=4, progress=False), plain)


def test_masks_multiply_the_image(model, images) -> None:
    masks = np.zeros((N, 1, H, W), np.uint8)
    masks[:, :, : H // 2] = 255  # keep the top half only
    feats = extract_features(model, images, masks=masks, progress=False)
    top = images.copy()
    top[:, :, H // 2 :] = 0
    assert torch.equal(feats, extract_features(model, top, progress=False))
    assert not torch.allclose(feats, extract_features(model, images, progress=False))
    # the 0/1 uint8 masks of unreid.masks.load_masks mean the same as 0/255
    binary = (masks > 0).astype(np.uint8)
    assert torch.equal(extract_features(model, images, masks=binary, progress=False), feats)
    # float masks in [0, 1] are used as they are (soft foreground)
    soft = np.random.default_rng(1).random((N, 1, H, W), dtype=np.float32)
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 255 * torch.from_numpy(soft)
        expected = model.eval()(x)
    got = extract_features(model, images, masks=soft, progress=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_reads_one_batch_at_a_time(model, images) -> None:
    rec = images.view(SliceRecorder)
    rec.reads = []
    extract_features(model, rec, batch_size=4, progress=False)
    assert rec.reads == [4, 4, 2]


def test_indices_extract_a_subset_in_order(model, images) -> None:
    full = extract_features(model, images, progress=False)
    idx = np.array([7, 2, 3, 9])
    part = extract_features(model, images, batch_size=3, indices=idx, progress=False)
    torch.testing.assert_close(part, full[idx], rtol=1e-5, atol=1e-6)


def test_mode_is_restored_and_features_are_ordinary_tensors(model, images) -> None:
    model.train()
    feats = extract_features(model, images[:3], progress=False)
    assert model.training
    assert not feats.is_inference()
    feats.mul_(2.0)  # in-place use (e.g. memory initialisation) must be allowed
    model.eval()
    extract_features(model, images[:3], progress=False)
    assert not model.training


def test_empty_input_and_bad_masks(model, images) -> None:
    assert extract_features(model, images[:0], progress=False).shape == (0, 96)
    with pytest.raises(ValueError, match=r"masks must be \(N, 1, H, W\)"):
        extract_features(model, images, masks=np.ones((N, 3, H, W), np.uint8), progress=False)


def test_feature_sets_read_each_batch_once_and_equal_separate_passes(model, images) -> None:
    masks = np.zeros((N, 1, H, W), np.uint8)
    masks[:, :, : H // 2] = 1
    rec = images.view(SliceRecorder)
    rec.reads = []
    plain, masked = extract_feature_sets(model, rec, [None, masks], batch_size=4,
                                         progress=False)
    assert rec.reads == [4, 4, 2]  # the images are read once for both sets
    assert torch.equal(plain, extract_features(model, images, batch_size=4, progress=False))
    assert torch.equal(masked, extract_features(model, images, batch_size=4, masks=masks,
                                                progress=False))
    empty = extract_feature_sets(model, images[:0], [None, masks[:0]], progress=False)
    assert [tuple(f.shape) for f in empty] == [(0, 96), (0, 96)]
    with pytest.raises(ValueError, match="at least one feature set"):
        extract_feature_sets(model, images, [], progress=False)
