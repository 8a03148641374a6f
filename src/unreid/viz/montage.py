"""Image grids: ranked lists and cluster montages.

Images are (3, H, W) uint8 arrays (the layout of the decoded cache). Frames
are drawn by padding, so the functions are exact and testable pixel by pixel:
green = right identity, red = wrong, grey = unknown or the query itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "GREEN",
    "GREY",
    "RED",
    "cluster_montage",
    "framed",
    "overlay_mask",
    "ranked_list_image",
]

GREEN = (34, 170, 68)
RED = (220, 40, 40)
GREY = (150, 150, 150)
BLUE = (40, 90, 220)

_FRAME = 3
_GAP = 4
_LABEL_H = 14


def framed(image: np.ndarray, colour: tuple[int, int, int], width: int = _FRAME) -> np.ndarray:
    """(3, H, W) uint8 -> (H + 2w, W + 2w, 3) uint8 with a solid frame of ``colour``."""
    hwc = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(1, 2, 0))
    h, w, _ = hwc.shape
    out = np.empty((h + 2 * width, w + 2 * width, 3), dtype=np.uint8)
    out[...] = np.asarray(colour, dtype=np.uint8)
    out[width : width + h, width : width + w] = hwc
    return out


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, colour=(255, 0, 255)
) -> np.ndarray:
    """Tint the background (mask == 0) of a (3, H, W) uint8 image.

    ``mask`` is (1, H, W) or (H, W), uint8 0/255 or float in [0, 1]. Pixels
    with foreground weight m keep ``m`` of the image and get ``(1-m)*alpha``
    of the tint: what the foreground-feature branch does not see turns pink.
    """
    m = np.asarray(mask, dtype=np.float32).reshape(image.shape[-2:])
    if m.max() > 1.0:
        m = m / 255.0
    tint = np.asarray(colour, dtype=np.float32)[:, None, None]
    weight = (1.0 - m)[None] * alpha
    out = image.astype(np.float32) * (1.0 - weight) + tint * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _row(tiles: Sequence[np.ndarray], labels: Sequence[str], gap: int = _GAP) -> Image.Image:
    height = max(t.shape[0] for t in tiles) + _LABEL_H
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, label in zip(tiles, labels, strict=True):
        canvas.paste(Image.fromarray(tile), (x, 0))
        if label:
            draw.text((x + 1, tile.shape[0] + 1), label, fill=(0, 0, 0))
        x += tile.shape[1] + gap
    return canvas


def ranked_list_image(
    query: np.ndarray,
    gallery: Sequence[np.ndarray],
    matches: Sequence[bool | None] | None = None,
    distances: Sequence[float] | None = None,
) -> Image.Image:
    """One row: the query (blue frame), then the ranked gallery images.

    ``matches[i]`` colours gallery image i green (True), red (False) or grey
    (None, identity unknown); ``distances`` are printed under the tiles.
    """
    matches = list(matches) if matches is not None else [None] * len(gallery)
    tiles = [framed(query, BLUE)]
    labels = ["query"]
    for i, (img, ok) in enumerate(zip(gallery, matches, strict=True)):
        tiles.append(framed(img, GREY if ok is None else (GREEN if ok else RED)))
        labels.append(f"#{i + 1}" + (f" d={distances[i]:.2f}" if distances is not None else ""))
    return _row(tiles, labels)


def cluster_montage(
    clusters: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str],
    impure: Sequence[Sequence[bool]] | None = None,
) -> Image.Image:
    """Rows of images, one row per pseudo-identity.

    ``impure[c][i]`` marks image i of cluster c red when its true identity is
    not the cluster's majority identity (only known on labelled data).
    """
    rows = []
    for c, images in enumerate(clusters):
        flags = impure[c] if impure is not None else [False] * len(images)
        tiles = [framed(img, RED if bad else GREY) for img, bad in zip(images, flags, strict=True)]
        rows.append(_row(tiles, [titles[c]] + [""] * (len(tiles) - 1)))
    width = max(r.width for r in rows)
    height = sum(r.height for r in rows) + _GAP * (len(rows) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + _GAP
    return canvas
