from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from unreid.errors import ConfigError, DataError
from unreid.masks import (
    FileMaskProvider,
    build_mask_provider,
    degrade_mask,
    load_masks,
    precompute_masks,
)
from unreid.masks.base import read_mask_png


def _figure(h: int = 128, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A plain drawn pedestrian on a noisy background: (h, w, 3) uint8 image, (h, w) bool mask."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.integers(90, 200, 3), dtype=np.int64)
    img = np.clip(img + rng.integers(-20, 20, (h, w, 1)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    dx = np.abs(xx - w / 2)
    head = ((yy - 0.12 * h) / (0.08 * h)) ** 2 + (dx / (0.12 * w)) ** 2 <= 1
    torso = (yy > 0.2 * h) & (yy < 0.55 * h) & (dx < 0.2 * w)
    arms = (yy > 0.22 * h) & (yy < 0.5 * h) & (dx >= 0.2 * w) & (dx < 0.28 * w)
    legs = (yy >= 0.55 * h) & (yy < 0.95 * h) & (dx > 0.03 * w) & (dx < 0.17 * w)
    for part, colour in ((head, 224), (arms, 224), (torso, 30), (legs, 120)):
        img[part] = (colour, 60, 255 - colour)
    return img, head | torso | arms | legs


def _world(tmp_path: Path, n: int = 4, h: int = 16, w: int = 8) -> SimpleNamespace:
    """A tiny Market-style tree with ground-truth masks in ROOT/masks (as `unreid synth`)."""
    root = tmp_path / "world"
    splits = {}
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        paths = []
        for i in range(n):
            img, fg = _figure(h, w, seed=i)
            p = root / split / f"{i + 1:04d}_c{i % 2 + 1}s1_{i:06d}_00.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p, quality=95)
            m = root / "masks" / split / f"{p.stem}.png"
            m.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(fg.astype(np.uint8) * 255).save(m)
            paths.append(str(p))
        splits[split] = SimpleNamespace(paths=tuple(paths))
    return SimpleNamespace(
        root=root,
        train=splits["bounding_box_train"],
        query=splits["query"],
        gallery=splits["bounding_box_test"],
    )


def _img_batch(n: int, h: int, w: int) -> np.ndarray:
    return np.zeros((n, 3, h, w), dtype=np.uint8)


def test_png_label_maps_and_binary_masks_become_foreground(tmp_path):
    labels = np.zeros((4, 4), dtype=np.uint8)
    labels[1, 1], labels[2, 3], labels[3, 0] = 2, 5, 13  # LIP-style part labels
    pal = Image.new("P", (4, 4))
    pal.putdata(labels.flatten().tolist())
    pal.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    pal.save(tmp_path / "a.png")
    Image.fromarray((labels > 0).astype(np.uint8) * 255).save(tmp_path / "b.png")
    root = tmp_path / "imgs"
    provider = FileMaskProvider(tmp_path, dataset_root=root)
    out = provider(_img_batch(2, 4, 4), [str(root / "a.jpg"), str(root / "b.jpg")])
    assert out.dtype == torch.float32 and out.shape == (2, 1, 4, 4)
    expected = torch.from_numpy((labels > 0).astype(np.float32))
    assert torch.equal(out[0, 0], expected) and torch.equal(out[1, 0], expected)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "a.png"), labels > 0)


def test_mask_of_another_size_is_resized_nearest(tmp_path):
    small = np.array([[0, 255], [255, 0], [0, 0], [255, 255]], dtype=np.uint8)  # 4 x 2
    Image.fromarray(small).save(tmp_path / "x.png")
    out = FileMaskProvider(tmp_path)(torch.zeros((1, 3, 8, 4), dtype=torch.uint8), ["/d/x.jpg"])
    expected = np.kron(small > 0, np.ones((2, 2))).astype(np.float32)
    np.testing.assert_array_equal(out[0, 0].numpy(), expected)


def test_mirrored_then_flat_lookup_and_missing_masks(tmp_path):
    root, masks = tmp_path / "data", tmp_path / "masks"
    (masks / "sub").mkdir(parents=True)
    Image.fromarray(np.full((2, 2), 255, np.uint8)).save(masks / "sub" / "a.png")
    Image.fromarray(np.full((2, 2), 255, np.uint8)).save(masks / "b.png")  # flat (SCHP output)
    paths = [str(root / "sub" / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    strict = FileMaskProvider(masks, dataset_root=root)
    with pytest.raises(DataError, match=r"2 of 4 images have no mask .*sub/c\.jpg, sub/d\.jpg"):
        strict.check(paths)
    with pytest.raises(DataError, match="--allow-missing-masks"):
        strict(_img_batch(4, 2, 2), paths)
    lenient = FileMaskProvider(masks, dataset_root=root, allow_missing=True)
    assert lenient.check(paths) == 2
    out = lenient(_img_batch(4, 2, 2), paths)
    assert torch.equal(out, torch.ones(4, 1, 2, 2)) and lenient.stats["missing"] == 2


def test_empty_mask_falls_back_to_whole_image_and_is_counted(tmp_path):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "e.png")
    one = np.zeros((10, 10), np.uint8)
    one[0, 0] = 255  # 1% foreground: kept
    Image.fromarray(one).save(tmp_path / "f.png")
    provider = FileMaskProvider(tmp_path)
    out = provider(_img_batch(2, 10, 10), ["e.jpg", "f.jpg"])
    assert torch.equal(out[0], torch.ones(1, 10, 10)) and out[1].sum() == 1
    assert provider.stats == {"empty": 1, "missing": 0}


def test_synthetic_noise_is_deterministic_per_image_and_grows_with_strength(tmp_path):
    world = _world(tmp_path, n=2, h=64, w=32)
    path = world.train.paths[0]
    clean = build_mask_provider("synthetic", dataset_root=world.root)
    gt = clean(_img_batch(1, 64, 32), [path])
    _, fg = _figure(64, 32, seed=0)
    assert torch.equal(gt[0, 0], torch.from_numpy(fg.astype(np.float32)))  # noise 0: as stored
    errors = []
    for noise in (0.3, 1.0):
        p = build_mask_provider("synthetic", dataset_root=world.root, noise=noise)
        a, b = p(_img_batch(1, 64, 32), [path]), p(_img_batch(1, 64, 32), [path])
        assert torch.equal(a, b)  # same image, same damage
        errors.append(float((a != gt).float().mean()))
    assert 0 < errors[0] < errors[1]
    other = build_mask_provider("synthetic", dataset_root=world.root, noise=1.0)
    second = other(_img_batch(1, 64, 32), [world.train.paths[1]])
    _, fg1 = _figure(64, 32, seed=1)
    assert (second[0, 0].numpy() != fg1).any()


def test_degrade_mask_exact_properties():
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:30, 15:25] = True
    assert degrade_mask(mask, 0.0, seed=1) is mask
    out = degrade_mask(mask, 0.5, seed=1)
    np.testing.assert_array_equal(out, degrade_mask(mask, 0.5, seed=1))
    assert out.shape == mask.shape and out.dtype == bool and (out != mask).any()


def test_build_mask_provider_errors(tmp_path):
    with pytest.raises(ConfigError, match="masks.mask_dir"):
        build_mask_provider("png")
    with pytest.raises(ConfigError, match="unknown"):
        build_mask_provider("schp")
    with pytest.raises(DataError, match="unreid synth"):
        build_mask_provider("synthetic", dataset_root=tmp_path)
    with pytest.raises(ConfigError, match=r"masks\.noise"):
        build_mask_provider("png", mask_dir=tmp_path, noise=2.0)
    out = build_mask_provider("none")(torch.zeros((2, 3, 4, 3), dtype=torch.uint8), ["a", "b"])
    assert torch.equal(out, torch.ones(2, 1, 4, 3))


def test_precompute_writes_mirrored_pngs_and_a_summary(tmp_path):
    world = _world(tmp_path, n=3, h=16, w=8)
    out = tmp_path / "out"
    summary = precompute_masks("synthetic", world, out, size=(32, 16), progress=False)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(written) == 9 and "bounding_box_train/0001_c1s1_000000_00.png" in written
    m = np.asarray(Image.open(out / "query" / "0002_c2s1_000001_00.png"))
    assert m.shape == (32, 16) and set(np.unique(m).tolist()) <= {0, 255}
    _, fg = _figure(16, 8, seed=1)
    np.testing.assert_array_equal(m > 0, np.kron(fg, np.ones((2, 2), bool)))
    fractions = [_figure(16, 8, seed=i)[1].mean() for i in range(3)]
    assert summary.count == 9 and summary.empty == 0 and summary.missing == 0
    assert summary.mean_foreground == pytest.approx(np.mean(fractions), abs=1e-9)
    text = str(summary)
    assert "9 masks (synthetic)" in text and "mean foreground" in text and "empty" in text
    assert json.loads((out / "masks.json").read_text())["count"] == 9
    # the written folder serves the png provider; native size when size=None
    again = precompute_masks("png", world, tmp_path / "o2", mask_dir=out, progress=False)
    assert again.count == 9
    assert np.asarray(Image.open(tmp_path / "o2" / "query" / "0001_c1s1_000000_00.png")).shape == (
        16,
        8,
    )
    with pytest.raises(ConfigError, match="mask folder being read"):
        precompute_masks("png", world, out, mask_dir=out, progress=False)


def test_precompute_lists_missing_masks_before_any_work(tmp_path):
    world = _world(tmp_path, n=2)
    (world.root / "masks" / "query" / "0001_c1s1_000000_00.png").unlink()
    with pytest.raises(DataError, match="1 of 6 images have no mask"):
        precompute_masks("synthetic", world, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    s = precompute_masks("synthetic", world, tmp_path / "out", allow_missing=True, progress=False)
    assert s.missing == 1 and "missing -> whole image 1" in str(s)


def test_load_masks_values_and_cache(tmp_path):
    world = _world(tmp_path, n=3, h=16, w=8)
    provider = build_mask_provider("synthetic", dataset_root=world.root)
    cache = tmp_path / "cache"
    masks = load_masks(world.train.paths, provider, 32, 16, cache, progress=False)
    assert masks.shape == (3, 1, 32, 16) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 1}
    _, fg = _figure(16, 8, seed=2)
    np.testing.assert_array_equal(masks[2, 0], np.kron(fg, np.ones((2, 2), np.uint8)))
    assert len(list(cache.glob("masks-*.npy"))) == 1
    cached = load_masks(world.train.paths, provider, 32, 16, cache, progress=False)
    assert isinstance(cached, np.memmap)
    np.testing.assert_array_equal(cached, masks)
    noisy = build_mask_provider("synthetic", dataset_root=world.root, noise=0.5)
    load_masks(world.train.paths, noisy, 32, 16, cache, progress=False)
    assert len(list(cache.glob("masks-*.npy"))) == 2  # other settings, other file
    in_memory = load_masks(world.train.paths, provider, 32, 16, None, progress=False)
    np.testing.assert_array_equal(in_memory, masks)


def test_cli_masks_end_to_end(tmp_path, capsys):
    from unreid.cli import main

    world = _world(tmp_path, n=3, h=16, w=8)
    out = tmp_path / "cli_masks"
    code = main(["masks", "--provider", "synthetic", "--data", str(world.root), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "masks (synthetic)" in printed and "mean foreground" in printed
    assert len(list(out.rglob("*.png"))) >= 9
    code = main(["masks", "--provider", "png", "--data", str(world.root), "--out", str(out)])
    assert code == 2 and "mask_dir" in capsys.readouterr().err


def test_mediapipe_segments_a_drawn_pedestrian(tmp_path):
    pytest.importorskip("mediapipe")
    provider = build_mask_provider("mediapipe")
    img, fg = _figure(128, 64)
    blank = np.full((128, 64, 3), 128, np.uint8)  # no person: empty -> whole image
    out = provider(np.stack([img, blank]).transpose(0, 3, 1, 2), ["a.jpg", "b.jpg"])
    pred = out[0, 0].numpy() > 0.5
    iou = (pred & fg).sum() / (pred | fg).sum()
    assert iou > 0.6
    assert torch.equal(out[1], torch.ones(1, 128, 64)) and provider.stats["empty"] == 1
    assert 0 < provider.ms_per_crop < 1000
