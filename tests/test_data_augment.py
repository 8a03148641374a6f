from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unreid.data.augment import IMAGENET_MEAN, BatchAugment, affine_warp, build_augment
from unreid.errors import ConfigError


def _images(b=6, h=32, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["cluster_contrast", "rsl", "none"])
def test_augment_shape_dtype_range_and_determinism(name):
    aug = build_augment(name, 24, 12)
    x = _images(h=30, w=14)
    out = aug(x, _gen(1))
    assert out.shape == (6, 3, 24, 12) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, aug(x, _gen(1)), rtol=0, atol=0)
    if name != "none":
        assert not torch.equal(out, aug(x, _gen(2)))


def test_none_is_plain_resize_and_identity_at_the_cached_size():
    x = _images(h=30, w=14)
    ref = F.interpolate(x.float() / 255, size=(24, 12), mode="bilinear", antialias=True)
    torch.testing.assert_close(build_augment("none", 24, 12)(x, _gen()), ref.clamp(0, 1))
    same = build_augment("none", 32, 16)(_images(), _gen())
    torch.testing.assert_close(same, _images().float() / 255, rtol=0, atol=0)


def test_flip_exactly_mirrors_the_image():
    x = _images()
    out = BatchAugment(32, 16, flip_p=1.0)(x, _gen())
    torch.testing.assert_close(out, x.flip(-1).float() / 255, rtol=0, atol=0)
    kept = BatchAugment(32, 16, flip_p=0.0, pad=0)(x, _gen())
    torch.testing.assert_close(kept, x.float() / 255, rtol=0, atol=0)


def test_pad_and_crop_is_an_integer_shift_with_zero_fill():
    x = torch.full((64, 3, 8, 6), 200, dtype=torch.uint8)
    out = BatchAugment(8, 6, pad=2)(x, _gen(3))
    # every output is a shifted copy: values are exactly 200/255 or 0 (the padding)
    v = torch.tensor(200 / 255)
    assert ((out == 0) | (out == v)).all()
    # the zero region is a band of at most 2 rows and 2 columns at the borders
    assert (out[:, :, 2:-2, 2:-2] == v).all()
    zeros_per_image = (out[:, 0] == 0).flatten(1).sum(1)
    assert zeros_per_image.max() > 0  # some images were shifted
    # a single-pixel image: the pixel lands within +-pad of where it was
    one = torch.zeros((32, 3, 8, 6), dtype=torch.uint8)
    one[:, :, 4, 3] = 255
    moved = BatchAugment(8, 6, pad=2)(one, _gen(4))[:, 0]
    pos = moved.flatten(1).argmax(1)
    rows, cols = pos // 6, pos % 6
    assert ((rows - 4).abs() <= 2).all() and ((cols - 3).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 3


def test_random_erasing_fills_a_box_with_the_imagenet_mean():
    x = torch.zeros((40, 3, 32, 16), dtype=torch.uint8)
    out = BatchAugment(32, 16, erase_p=1.0)(x, _gen(5))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    erased = (out == mean).all(1)  # (B, H, W)
    frac = erased.flatten(1).float().mean(1)
    assert (frac > 0).all()  # p=1: every image erased (a fitting box always exists here)
    assert frac.max() <= 0.4 + 1e-6 and frac.min() >= 0.02 * 0.5  # rounding of tiny boxes
    for box in erased[:5]:  # the erased pixels form one filled rectangle
        r = box.any(1).nonzero().flatten()
        c = box.any(0).nonzero().flatten()
        assert box[r.min() : r.max() + 1, c.min() : c.max() + 1].all()
        assert box.sum() == (r.max() - r.min() + 1) * (c.max() - c.min() + 1)
    untouched = out[~erased[:, None].expand_as(out)]
    assert (untouched == 0).all()
    half = BatchAugment(32, 16, erase_p=0.5)(x, _gen(6))
    n_erased = int((half != 0).flatten(1).any(1).sum())
    assert 8 <= n_erased <= 32


def test_affine_warp_exact_cases():
    x = torch.rand(2, 3, 8, 8)
    zero = torch.zeros(2)
    torch.testing.assert_close(affine_warp(x, zero, torch.zeros(2, 2)), x)
    # 90 degrees counter-clockwise on a square image is rot90
    rot = affine_warp(x, torch.full((2,), 90.0), torch.zeros(2, 2))
    torch.testing.assert_close(rot, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    # shift by (dx=2 right, dy=1 down): the content moves, borders repeat
    shifted = affine_warp(x, zero, torch.tensor([[2.0, 1.0], [2.0, 1.0]]))
    torch.testing.assert_close(shifted[:, :, 1:, 2:], x[:, :, :-1, :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted[:, :, 0, 2:], x[:, :, 0, :-2], atol=1e-5, rtol=0)
    # non-square: 180 degrees is an exact double flip (aspect handled)
    y = torch.rand(1, 3, 10, 4)
    flipped = affine_warp(y, torch.tensor([180.0]), torch.zeros(1, 2))
    torch.testing.assert_close(flipped, y.flip(-1).flip(-2), atol=1e-5, rtol=0)


def test_rsl_preset_shifts_and_rotates_within_its_bounds():
    aug = build_augment("rsl", 40, 40)
    assert aug.max_shift == 0.2 and aug.max_rotation_deg == 20 and aug.flip_p == 0
    # a white square in the middle: its centre of mass moves by at most 0.2 x 40 = 8 px
    x = torch.zeros((16, 3, 40, 40), dtype=torch.uint8)
    x[:, :, 16:24, 16:24] = 255
    out = aug(x, _gen(7))[:, 0]
    ys = torch.arange(40.0)
    mass = out.sum((1, 2))
    cy = (out.sum(2) * ys).sum(1) / mass
    cx = (out.sum(1) * ys).sum(1) / mass
    assert ((cy - 19.5).abs() <= 8.5).all() and ((cx - 19.5).abs() <= 8.5).all()
    assert (cy - 19.5).abs().max() > 1  # it does move


def test_overrides_and_bad_input():
    aug = build_augment("cluster_contrast", 32, 16, erase_p=0.0)
    assert aug.erase_p == 0.0 and aug.pad == 10
    x = _images()
    with pytest.raises(ConfigError, match="method.augment"):
        build_augment("autoaugment", 32, 16)
    with pytest.raises(ValueError, match="uint8"):
        aug(x.float(), _gen())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_images_matches_cpu_result():
    aug = build_augment("cluster_contrast", 32, 16)
    x = _images()
    out = aug(x.cuda(), _gen(8))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), aug(x, _gen(8)), atol=1e-6, rtol=0)
