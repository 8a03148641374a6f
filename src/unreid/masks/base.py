"""The mask provider interface and the helpers every provider shares.

A provider turns a batch of uint8 images (B, 3, H, W) and their file paths
into float masks (B, 1, H, W) in [0, 1], 1 = person. Paths let file-based
providers find their PNGs; pixel-based providers (mediapipe) ignore them.
Providers count the images they could not serve properly (``stats``): masks
that came out empty and fell back to the whole image, and missing mask files
that were allowed to fall back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unreid.errors import DataError
from unreid.io import atomic_write, first_line

__all__ = [
    "MaskProvider",
    "binarize_label_map",
    "read_mask_png",
    "relative_image_name",
    "resize_nearest",
    "write_mask_png",
]


class MaskProvider:
    """Base class: ``provider(images, paths) -> (B, 1, H, W) float32 tensor in [0, 1]``.

    Subclasses implement :meth:`_masks`; :meth:`compute` adds the shared
    fallback: a mask with less than ``min_foreground`` of its pixels on (the
    parser found no person, e.g. someone behind a pole) becomes all ones, i.e.
    the unmasked image, and is counted. ``needs_images`` tells callers whether
    the pixels are used at all (file providers only need the output size, so
    :func:`unreid.masks.load_masks` skips decoding for them).

    ``stats`` counts, since construction or :meth:`reset_stats`: ``empty``
    (masks replaced by all ones because nothing was found) and ``missing``
    (absent mask files replaced by all ones, with ``allow_missing``).
    """

    name = "base"
    needs_images = False
    min_foreground = 0.01

    def __init__(self) -> None:
        self.stats = {"empty": 0, "missing": 0}

    def reset_stats(self) -> None:
        self.stats = dict.fromkeys(self.stats, 0)

    def __call__(self, images: torch.Tensor | np.ndarray, paths: Sequence[str]) -> torch.Tensor:
        """uint8 (B, 3, H, W) images (tensor or array) -> float32 (B, 1, H, W) masks.

        A tensor input gives masks on the same device; an array input gives CPU masks.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        if len(paths) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(paths)} paths")
        device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
        pixels = None
        if self.needs_images:
            pixels = images.cpu().numpy() if isinstance(images, torch.Tensor) else images
            pixels = np.asarray(pixels, dtype=np.uint8)
        h, w = images.shape[-2:]
        return torch.from_numpy(self.compute(pixels, paths, int(h), int(w))).to(device)

    def compute(
        self, images: np.ndarray | None, paths: Sequence[str], height: int, width: int
    ) -> np.ndarray:
        """float32 (B, 1, height, width) masks in [0, 1]; ``images`` is None unless needed."""
        masks = np.asarray(self._masks(images, paths, height, width), dtype=np.float32)
        fraction = masks.reshape(len(masks), -1).mean(axis=1)
        empty = fraction < self.min_foreground
        masks[empty] = 1.0
        self.stats["empty"] += int(empty.sum())
        return masks

    def _masks(
        self, images: np.ndarray | None, paths: Sequence[str], height: int, width: int
    ) -> np.ndarray:
        """(B, 1, height, width) masks (bool or float in [0, 1]) before the empty fallback."""
        raise NotImplementedError

    def check(self, paths: Sequence[str]) -> int:
        """Fail early (DataError listing them) on missing inputs; returns how many are missing."""
        return 0

    def cache_key(self, paths: Sequence[str]) -> str:
        """A string that changes whenever this provider would give other masks for ``paths``."""
        return f"{self.name}:min{self.min_foreground}"


def relative_image_name(path: str | Path, root: str | Path | None) -> str:
    """``path`` relative to ``root`` (posix), or its file name when outside ``root`` / no root."""
    full = os.path.abspath(path)
    if root is not None:
        rel = os.path.relpath(full, os.path.abspath(root))
        if not rel.startswith(".."):
            return Path(rel).as_posix()
    return Path(full).name


def binarize_label_map(arr: np.ndarray) -> np.ndarray:
    """A decoded mask PNG -> bool (h, w) foreground.

    Label maps (SCHP / LIP: 0 = background, any other label = a body part or
    clothing) and binary masks (0 / 1 or 0 / 255) both become ``value > 0``.
    Colour images (a colourised label map) are foreground where any channel is
    non-zero.
    """
    if arr.ndim == 2:
        return arr > 0
    if arr.ndim == 3:
        return np.asarray((arr > 0).any(axis=2))
    raise ValueError(f"mask array must be (h, w) or (h, w, c), got {arr.shape}")


def read_mask_png(path: str | Path) -> np.ndarray:
    """bool (h, w) foreground of a mask file; DataError naming the file when unreadable.

    Palette images keep their indices (SCHP writes label indices with a
    palette); an alpha channel, when it is not constant, is the mask.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA"):
                alpha = np.asarray(img.getchannel("A"))
                if alpha.min() != alpha.max():
                    return alpha > 0
                arr = np.asarray(img.convert("RGB" if img.mode == "RGBA" else "L"))
            else:
                arr = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"mask {path} cannot be read ({first_line(exc)}): re-create or delete it"
        ) from None
    return binarize_label_map(arr)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask (bool or uint8) to (height, width)."""
    if mask.shape == (height, width):
        return mask
    img = Image.fromarray(mask.astype(np.uint8))
    return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)).astype(mask.dtype)


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a 2-D mask (bool or values in [0, 1]) as an 8-bit PNG of 0 / 255, atomically."""
    fg = mask > 0.5 if mask.dtype != bool else mask
    image = Image.fromarray(fg.astype(np.uint8) * 255)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
