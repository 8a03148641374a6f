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


def _grey16(tmp_path) -> tuple[str, np.ndarray]:
    """A 16-bit greyscale PNG spanning the whole 0..65535 range, and its 8-bit truth."""
    values = np.array([[0, 257, 32896, 65535], [514, 1000, 50000, 65280]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")  # really a 16-bit file
    return str(path), np.rint(values / 257.0).astype(np.uint8)


def test_16_bit_greyscale_png_is_scaled_to_8_bit_not_clipped_white(tmp_path):
    path, want = _grey16(tmp_path)
    got = decode_image(path)
    assert got.shape == (3, 2, 4)
    np.testing.assert_array_equal(got, np.broadcast_to(want, (3, 2, 4)))
    assert want.tolist() == [[0, 1, 128, 255], [2, 4, 195, 254]]


@pytest.mark.parametrize(
    ("mode", "pixel", "want"),
    [
        ("I", 40000, 156),  # 32-bit integer holding 16-bit values: /257
        ("I", 200, 200),  # 32-bit integer holding 8-bit values: as is
        ("F", 0.5, 128),  # float in [0, 1]: *255
        ("F", 100.0, 100),  # float in [0, 255]: as is
        ("I;16B", 65535, 255),
    ],
)
def test_wide_modes_are_scaled_by_the_range_their_values_use(tmp_path, mode, pixel, want):
    img = Image.new(mode, (2, 2), pixel)
    path = tmp_path / "wide.tif"
    img.save(path)
    with Image.open(path) as back:
        assert back.mode == mode
    assert decode_image(path).tolist() == np.full((3, 2, 2), want).tolist()


def test_alpha_palette_and_cmyk_images_decode_to_what_a_viewer_shows(tmp_path):
    # grey + alpha: a transparent pixel shows the white page behind it, not its hidden grey
    la = Image.new("LA", (2, 1), (10, 255))
    la.putpixel((1, 0), (10, 0))
    la.save(tmp_path / "la.png")
    assert decode_image(tmp_path / "la.png")[:, 0].T.tolist() == [[10] * 3, [255] * 3]
    # palette with a transparent index
    pal = Image.new("P", (2, 1), 1)
    pal.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    pal.putpixel((1, 0), 0)
    pal.save(tmp_path / "p.png", transparency=0)
    assert decode_image(tmp_path / "p.png")[:, 0].T.tolist() == [[200, 30, 40], [255] * 3]
    # CMYK (print files): pure cyan is (0, 255, 255) in RGB
    Image.new("CMYK", (2, 2), (255, 0, 0, 0)).save(tmp_path / "c.tif")
    assert decode_image(tmp_path / "c.tif")[:, 0, 0].tolist() == [0, 255, 255]


def test_resized_16_bit_image_matches_resizing_its_8_bit_version(tmp_path):
    path, want = _grey16(tmp_path)
    eight = Image.fromarray(want).convert("RGB").resize((2, 1), Image.BILINEAR)
    np.testing.assert_array_equal(decode_image(path, 1, 2),
                                  np.asarray(eight).transpose(2, 0, 1))


def test_check_data_names_the_modes_it_converted(tmp_path):
    from unreid.data.check import check_data, format_report

    root = tmp_path / "m"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (root / split).mkdir(parents=True)
    rgb = np.full((16, 8, 3), 90, np.uint8)
    for name in ("0001_c1s1_000001_00.png", "0001_c2s1_000002_00.png"):
        Image.fromarray(rgb).save(root / "bounding_box_train" / name)
    Image.fromarray(np.full((16, 8), 40000, np.uint16)).save(
        root / "bounding_box_train" / "0002_c1s1_000003_00.png")
    Image.fromarray(rgb).convert("P").save(root / "query" / "0001_c1s1_000004_00.png")
    Image.fromarray(np.full((16, 8), 9000, np.uint16)).save(
        root / "bounding_box_test" / "0001_c2s1_000005_00.png")
    report = check_data(root, progress=False)
    assert report.converted == (("I;16", 2), ("P", 1))
    text = format_report(report)
    assert "note: 3 images converted to 8-bit RGB (I;16: 2, P: 1; 16-bit" in text
    assert "decoded 5 images: 0 unreadable" in text
