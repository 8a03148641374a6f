"""Image decoding and the decoded-image cache.

Training reads every image once per epoch for feature extraction and many
times for batches; decoding JPEGs each time would spend the CPU cores on
libjpeg instead of the network. :func:`load_images` decodes each image once,
resizes it to the working resolution and keeps the result as one
``(N, 3, H, W)`` uint8 array: in memory, or as a memory-mapped ``.npy`` under
a cache folder keyed by the images' paths, sizes and modification times and
by (H, W), so a second run (or epoch) never touches a JPEG decoder and an
edited dataset never serves stale pixels. A Market-size set (12,936 images)
at 256x128 is 1.3 GB.

Every pixel format becomes 8-bit RGB the way an image viewer shows it (see
:func:`to_rgb`): 16-bit and float greyscale are scaled, not clipped to white;
transparent pixels show the white page behind them; palettes and CMYK map to RGB.

The cache file is written to a temporary name and moved into place
(:func:`unreid.io.atomic_path`): a killed run leaves no half-written cache behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from unreid.data.cache import ensure_private_dir, resolve_cache_dir
from unreid.errors import DataError
from unreid.io import atomic_path, first_line
from unreid.progress import progress_bar

__all__ = [
    "CACHE_VERSION", "PLAIN_MODES", "decode_image", "files_digest", "image_cache_key",
    "load_images", "to_rgb", "write_array_cache",
]

# Bump when decoding or resizing changes what a cache file holds.
CACHE_VERSION = 2
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# Pillow modes that are 8-bit RGB or grey already; every other mode is converted.
PLAIN_MODES = frozenset({"RGB", "L"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _value_range(mode: str, peak: float) -> float:
    """The full-scale value of a wide (more than 8-bit) greyscale image.

    ``I;16*`` declares 16 bits. ``I`` (32-bit integer) and ``F`` (float) carry no
    depth, so the smallest usual range that holds ``peak`` is taken: [0, 1] (float
    only), 8-bit, 16-bit, else the image's own maximum.
    """
    if mode.startswith("I;16"):
        return 65535.0
    for top in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
        if peak <= top:
            return top
    return peak


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, as a viewer shows it.

    16-bit / 32-bit / float greyscale (modes ``I;16``, ``I``, ``F``) is scaled from
    its range (:func:`_value_range`) to 0..255 and rounded, instead of Pillow's
    clipping (which turns a 16-bit photo almost white). Alpha (``LA``, ``RGBA``,
    ``PA``, palettes with a transparent index) is composited on white. Palette and
    CMYK images go through Pillow's own conversion.
    """
    mode = img.mode
    if mode in PLAIN_MODES:
        return img if mode == "RGB" else img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        top = _value_range(mode, float(values.max(initial=0.0)))
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(page, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(path: str | Path, height: int | None = None,
                 width: int | None = None) -> np.ndarray:
    """(3, H, W) uint8 RGB of one image file, resized (bilinear, antialiased) when
    ``height``/``width`` are given, else at its own size.

    Raises:
        DataError: the file is missing, empty or not a decodable image.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"image {path} is empty (0 bytes): re-copy it or remove it")
        with Image.open(path) as img:
            if height is not None and width is not None:
                # JPEG: let libjpeg decode at a reduced scale (>= the target size) first.
                img.draft("RGB", (width, height))
                rgb = to_rgb(img)
                if rgb.size != (width, height):
                    rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
            else:
                rgb = to_rgb(img)
            arr = np.asarray(rgb)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist: check the dataset folder") from None
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"image {path} cannot be decoded ({first_line(exc)}): remove or replace it"
        ) from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def files_digest(paths: Sequence[str], header: str) -> str:
    """20 hex digits naming a cache built from the files ``paths`` and ``header``.

    Covers each path with its size and mtime, so a replaced or edited file changes the
    key (every decoded or derived cache of a dataset is keyed this way)."""
    h = hashlib.sha256(f"{header}\n{len(paths)}\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:20]


def image_cache_key(paths: Sequence[str], height: int, width: int) -> str:
    """The key of the decoded cache of ``paths`` at (H, W) (see :func:`files_digest`)."""
    return files_digest(paths, f"images v{CACHE_VERSION} {height}x{width}")


def _default_workers() -> int:
    # PIL releases the GIL while decoding and resizing: threads scale on the cores.
    return max(1, min(4, os.cpu_count() or 1))


def _decode_into(out: np.ndarray, paths: Sequence[str], height: int, width: int,
                 progress: bool, workers: int | None) -> None:
    workers = workers or _default_workers()
    chunk = 64
    starts = range(0, len(paths), chunk)

    def work(start: int) -> int:
        part = paths[start : start + chunk]
        for i, p in enumerate(part):
            out[start + i] = decode_image(p, height, width)
        return len(part)

    with progress_bar(total=len(paths), desc=f"decode {height}x{width}", unit="img",
                      enabled=progress) as bar:
        if workers <= 1:
            for s in starts:
                bar.update(work(s))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for n in pool.map(work, starts):
                bar.update(n)


def load_images(
    paths: Sequence[str],
    height: int,
    width: int,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Decoded images of ``paths`` at (height, width): (N, 3, H, W) uint8, in order.

    Args:
        cache_dir: folder of the cache (``images-<key>.npy``); ``auto`` is the
            per-user cache (:func:`unreid.data.cache.resolve_cache_dir`); None or ""
            decodes into memory every call.
        progress: show a decode progress bar (only when decoding happens).
        workers: decoding threads (default: the CPU count, at most 4).

    Returns:
        the images; a read-only ``np.memmap`` when ``cache_dir`` is set.

    Raises:
        DataError: an image is missing, empty or corrupt (named in the message).
    """
    paths = [str(p) for p in paths]
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise DataError(f"image size {height}x{width} is invalid: set data.height/data.width")
    shape = (len(paths), 3, height, width)
    cache_dir = resolve_cache_dir(cache_dir)
    if cache_dir is None or not paths:  # (an empty memmap cannot be mapped)
        out = np.empty(shape, dtype=np.uint8)
        _decode_into(out, paths, height, width, progress, workers)
        return out
    cache_file = cache_dir / f"images-{image_cache_key(paths, height, width)}.npy"
    if cache_file.is_file():
        try:
            cached = np.load(cache_file, mmap_mode="r")
            if cached.shape == shape and cached.dtype == np.uint8:
                return cached
        except (OSError, ValueError):
            pass  # unreadable cache: rebuild it below
    return write_array_cache(
        cache_file, shape, lambda out: _decode_into(out, paths, height, width, progress, workers)
    )


def write_array_cache(
    cache_file: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]
) -> np.ndarray:
    """Build a uint8 ``.npy`` cache atomically and return it memory-mapped, read-only.

    ``fill(out)`` writes every element of the (``shape``) memmap ``out``; it may also
    write side files (they exist before the cache does). The array goes to a temporary
    file in ``cache_file``'s folder and is moved into place only once complete
    (:func:`unreid.io.atomic_path`), so an interrupted build (error, Ctrl-C, kill) never
    leaves a cache that a later run would trust. A folder it creates is private (mode
    0700); one it cannot write is a :class:`DataError` naming ``data.cache_dir``.
    """
    ensure_private_dir(cache_file.parent)
    with atomic_path(cache_file) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        fill(out)
        out.flush()
        del out
    return np.load(cache_file, mmap_mode="r")
