"""Masks for a whole dataset: precomputed PNGs (``unreid masks``) and the training cache.

``precompute_masks`` runs a provider once over every image of a dataset and
writes 0/255 PNGs mirroring the image tree, so that training reads them with
the ``png`` provider (``masks.provider=png masks.mask_dir=OUT``) and pays for a
segmenter only once. ``load_masks`` gives the engine the (N, 1, H, W) masks of
a split at the training size, cached as a memory-mapped ``.npy`` keyed like
the decoded image cache.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unreid.data.cache import resolve_cache_dir
from unreid.data.images import files_digest, load_images, to_rgb, write_array_cache
from unreid.errors import ConfigError, DataError
from unreid.io import atomic_write_bytes, first_line, refuse_overlap
from unreid.masks.base import MaskProvider, relative_image_name, resize_nearest, write_mask_png
from unreid.masks.providers import FileMaskProvider, build_mask_provider
from unreid.progress import progress_bar

__all__ = ["MaskSummary", "load_masks", "precompute_masks"]


@dataclass(frozen=True)
class MaskSummary:
    """What ``precompute_masks`` did. Fractions in [0, 1], times in seconds."""

    provider: str
    out_dir: str
    count: int
    mean_foreground: float  # mean over images of the foreground fraction of the written mask
    empty: int  # masks that were empty and fell back to the whole image
    missing: int  # mask files that were missing and allowed (whole image)
    seconds: float
    ms_per_image: float

    def __str__(self) -> str:
        n = max(self.count, 1)
        return (
            f"{self.count} masks ({self.provider}) written to {self.out_dir}\n"
            f"  mean foreground {100 * self.mean_foreground:.1f}%   "
            f"empty -> whole image {self.empty} ({100 * self.empty / n:.1f}%)   "
            f"missing -> whole image {self.missing} ({100 * self.missing / n:.1f}%)\n"
            f"  {self.seconds:.1f} s ({self.ms_per_image:.1f} ms per image)"
        )


def precompute_masks(
    provider: str | MaskProvider,
    dataset: Any,
    out_dir: str | Path,
    *,
    noise: float = 0.0,
    size: Sequence[int] | None = None,
    mask_dir: str | Path | None = None,
    allow_missing: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> MaskSummary:
    """Write a 0/255 PNG mask for every image of ``dataset`` (train, query and gallery).

    Args:
        provider: a provider name (built with ``mask_dir``, ``noise``,
            ``allow_missing`` and the dataset root) or a ready provider.
        dataset: a :class:`unreid.data.Dataset` (uses ``root`` and the splits' ``paths``).
        out_dir: output folder; ``OUT/<path relative to the root>.png`` per image.
        size: (H, W) of the written masks; None keeps each image's own size.
            Pixel-based providers always segment the image at its own size.
        batch_size: images handed to the provider at once (same-size images).

    Returns:
        a :class:`MaskSummary`; also written to ``OUT/masks.json``.

    Raises:
        DataError: missing masks (listed) without ``allow_missing``, unreadable images.
        ConfigError: ``out_dir`` is the folder the masks are read from.
    """
    root = Path(dataset.root)
    if isinstance(provider, str):
        provider = build_mask_provider(
            provider,
            mask_dir=mask_dir,
            noise=noise,
            allow_missing=allow_missing,
            dataset_root=root,
        )
    out = Path(out_dir)
    # masks written into the dataset would overwrite its PNG images or join its images
    refuse_overlap(out, root, what="the data folder", fix="write the masks outside it with")
    if isinstance(provider, FileMaskProvider) and _same_dir(out, provider.mask_dir):
        raise ConfigError(f"--out {out} is the mask folder being read: choose another folder")
    paths = _all_paths(dataset)
    provider.reset_stats()
    provider.check(paths)  # every missing mask listed before any work
    start = time.perf_counter()
    fg_sum = 0.0
    bar = progress_bar(total=len(paths), desc=f"masks ({provider.name})", unit="img",
                       enabled=progress)
    for chunk_start in range(0, len(paths), batch_size):
        chunk = paths[chunk_start : chunk_start + batch_size]
        if size is not None and not provider.needs_images:
            # file masks: resize once, straight to the requested size
            groups: Any = [(chunk, None, (int(size[0]), int(size[1])))]
        else:
            groups = _native_groups(chunk, provider.needs_images)
        for group, images, (h, w) in groups:
            masks = provider.compute(images, group, h, w)[:, 0] > 0.5
            for path, mask in zip(group, masks):
                if size is not None:
                    mask = resize_nearest(mask, int(size[0]), int(size[1]))
                fg_sum += float(mask.mean())
                rel = Path(relative_image_name(path, root)).with_suffix(".png")
                write_mask_png(out / rel, mask)
            bar.update(len(group))
    bar.close()
    seconds = time.perf_counter() - start
    summary = MaskSummary(
        provider=provider.name,
        out_dir=str(out),
        count=len(paths),
        mean_foreground=fg_sum / max(len(paths), 1),
        empty=provider.stats["empty"],
        missing=provider.stats["missing"],
        seconds=seconds,
        ms_per_image=1000.0 * seconds / max(len(paths), 1),
    )
    record = {**asdict(summary), "noise": noise, "size": list(size) if size else None}
    atomic_write_bytes(out / "masks.json", json.dumps(record, indent=2).encode())
    return summary


def load_masks(
    paths: Sequence[str],
    provider: MaskProvider,
    height: int,
    width: int,
    cache_dir: str | Path | None = None,
    *,
    images: np.ndarray | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> np.ndarray:
    """Foreground masks of ``paths`` at the training size: (N, 1, H, W) uint8 with values 0 / 1.

    Values are 0 / 1 (not 255) so that ``image * mask`` is the masked image.

    Args:
        paths: image paths of one split (e.g. ``dataset.train.paths``).
        provider: from :func:`build_mask_provider` (with the dataset root).
        height, width: training size.
        cache_dir: folder of the cache file (``masks-<key>.npy`` + ``.json`` with
            the provider's counts); None computes in memory. The key covers the
            paths, the images' and mask files' mtimes and sizes, the provider
            settings and H, W.
        images: (N, 3, H, W) uint8 decoded images when the caller has them
            (pixel-based providers); otherwise they are decoded with
            :func:`unreid.data.images.load_images` into the same cache folder.

    Returns:
        the masks; a read-only memmap when cached. ``provider.stats`` holds the
        counts of empty / missing masks (restored from the cache on a hit).
    """
    paths = list(paths)
    provider.check(paths)
    cache_file = None
    cache_dir = resolve_cache_dir(cache_dir)  # "auto": the per-user cache
    if cache_dir is not None:
        key = _cache_key(paths, provider, height, width)
        cache_file = cache_dir / f"masks-{key}.npy"
        if cache_file.is_file():
            meta = json.loads(cache_file.with_suffix(".json").read_text())
            provider.stats = dict(meta["stats"])
            return np.load(cache_file, mmap_mode="r")
    if provider.needs_images and images is None:
        images = load_images(paths, height, width, cache_dir=cache_dir, progress=progress)
    provider.reset_stats()
    shape = (len(paths), 1, height, width)

    def fill(out: np.ndarray) -> None:
        bar = progress_bar(total=len(paths), desc=f"masks ({provider.name})", unit="img",
                           enabled=progress)
        for i in range(0, len(paths), batch_size):
            batch = None if images is None else np.asarray(images[i : i + batch_size])
            masks = provider.compute(batch, paths[i : i + batch_size], height, width)
            out[i : i + len(masks)] = masks > 0.5
            bar.update(len(masks))
        bar.close()
        if cache_file is not None:  # the sidecar exists before the cache file does
            meta = {"stats": provider.stats, "provider": provider.cache_key(paths)[:500]}
            atomic_write_bytes(cache_file.with_suffix(".json"), json.dumps(meta).encode())

    if cache_file is None:
        out = np.empty(shape, dtype=np.uint8)
        fill(out)
        return out
    return write_array_cache(cache_file, shape, fill)


def _all_paths(dataset: Any) -> list[str]:
    """Every image of train, query and gallery once, in that order."""
    seen: dict[str, None] = {}
    for split in (dataset.train, dataset.query, dataset.gallery):
        for p in split.paths:
            seen.setdefault(str(p), None)
    return list(seen)


def _native_groups(paths: Sequence[str], decode: bool):
    """Yield (paths, images or None, (h, w)) groups of same-size images, at their own size."""
    groups: dict[tuple[int, int], list[tuple[str, np.ndarray | None]]] = {}
    for path in paths:
        try:
            with Image.open(path) as img:
                if decode:
                    arr = np.asarray(to_rgb(img)).transpose(2, 0, 1)
                    hw = arr.shape[1:]
                else:
                    arr, hw = None, (img.size[1], img.size[0])
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(
                f"image {path} cannot be read ({first_line(exc)}): remove or replace it"
            ) from None
        groups.setdefault((int(hw[0]), int(hw[1])), []).append((path, arr))
    for hw, items in groups.items():
        group = [p for p, _ in items]
        images = np.stack([a for _, a in items if a is not None]) if decode else None
        yield group, images, hw


def _cache_key(paths: Sequence[str], provider: MaskProvider, height: int, width: int) -> str:
    return files_digest(paths, f"masks {height}x{width}\n{provider.cache_key(paths)}")


def _same_dir(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b) or (a.exists() and b.exists() and a.samefile(b))
