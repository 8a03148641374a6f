"""Decoding and the decoded-image cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from unreid.data import decode_image, load_images
from unreid.data.images import write_array_cache
from unreid.errors import DataError


def _write(tmp_path, n: int = 5, size=(24, 48)) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        p = tmp_path / f"{i:04d}_c1s1_{i:06d}_00.png"  # PNG: lossless, exact expectations
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


def test_decode_matches_pil_resize(tmp_path):
    paths = _write(tmp_path, 1)
    with Image.open(paths[0]) as img:
        want = np.asarray(img.convert("RGB").resize((12, 20), Image.BILINEAR)).transpose(2, 0, 1)
        native = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_image(paths[0], 20, 12), want)
    np.testing.assert_array_equal(decode_image(paths[0]), native)
    assert decode_image(paths[0], 48, 24).shape == (3, 48, 24)


def test_cache_is_reused_and_keyed_by_content(tmp_path):
    (tmp_path / "img").mkdir()
    paths = _write(tmp_path / "img", 5)
    cache = tmp_path / "cache"
    first = load_images(paths, 16, 8, cache_dir=cache, progress=False)
    assert isinstance(first, np.memmap) and first.shape == (5, 3, 16, 8)
    in_memory = load_images(paths, 16, 8, progress=False, workers=1)
    np.testing.assert_array_equal(first, in_memory)
    files = list(cache.glob("images-*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = load_images(paths, 16, 8, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again, first)
    assert files[0].stat().st_mtime_ns == mtime  # served, not rewritten
    load_images(paths, 32, 16, cache_dir=cache, progress=False)
    assert len(list(cache.glob("images-*.npy"))) == 2  # another size, another file
    # an edited image changes the key: never stale pixels
    Image.fromarray(np.zeros((48, 24, 3), np.uint8)).save(paths[2])
    os.utime(paths[2], ns=(mtime + 10**9, mtime + 10**9))
    edited = load_images(paths, 16, 8, cache_dir=cache, progress=False)
    assert edited[2].max() == 0 and edited[1].max() > 0
    assert not list(cache.glob(".*"))  # no temp file left behind


def test_array_cache_is_published_only_when_complete(tmp_path):
    target = tmp_path / "c" / "x.npy"

    def half_then_fail(out):
        out[0] = 7
        raise KeyboardInterrupt  # a Ctrl-C in the middle of the build

    with pytest.raises(KeyboardInterrupt):
        write_array_cache(target, (2, 3), half_then_fail)
    assert not target.exists() and not list(target.parent.iterdir())

    def fill(out):
        out[:] = np.arange(6, dtype=np.uint8).reshape(2, 3)

    got = write_array_cache(target, (2, 3), fill)
    assert isinstance(got, np.memmap) and not got.flags.writeable
    np.testing.assert_array_equal(got, [[0, 1, 2], [3, 4, 5]])
    assert [p.name for p in target.parent.iterdir()] == ["x.npy"]


def test_bad_images_name_the_file(tmp_path):
    paths = _write(tmp_path, 2)
    empty = tmp_path / "0009_c1s1_000009_00.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"0009_c1s1_000009_00.jpg is empty \(0 bytes\)"):
        load_images([*paths, str(empty)], 16, 8, cache_dir=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").glob("*.npy"))  # nothing half-written left behind
    corrupt = tmp_path / "x.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="x.jpg cannot be decoded"):
        decode_image(corrupt, 16, 8)
    with pytest.raises(DataError, match="does not exist"):
        decode_image(tmp_path / "gone.jpg")


def test_empty_list_gives_an_empty_array(tmp_path):
    out = load_images([], 16, 8, cache_dir=tmp_path, progress=False)
    assert out.shape == (0, 3, 16, 8) and out.dtype == np.uint8
