"""Mask providers: none, synthetic and png (mask files), mediapipe (an offline segmenter)."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from unreid.errors import ConfigError, DataError
from unreid.masks.base import MaskProvider, read_mask_png, relative_image_name, resize_nearest

__all__ = [
    "FileMaskProvider",
    "MediaPipeMaskProvider",
    "NoMaskProvider",
    "build_mask_provider",
    "degrade_mask",
]

PROVIDERS = ("none", "synthetic", "png", "mediapipe")


class NoMaskProvider(MaskProvider):
    """All ones: the whole image is foreground (``masks.provider=none``)."""

    name = "none"

    def _masks(
        self, images: np.ndarray | None, paths: Sequence[str], height: int, width: int
    ) -> np.ndarray:
        return np.ones((len(paths), 1, height, width), dtype=np.float32)


class FileMaskProvider(MaskProvider):
    """Masks read from PNG files in a folder that mirrors the image tree.

    The mask of ``ROOT/sub/name.jpg`` is ``MASK_DIR/sub/name.png``; when that is
    absent, ``MASK_DIR/name.png`` (the flat folder a parser such as SCHP writes)
    is tried. Label maps (0 = background, any other value = person) and binary
    masks both work; a mask whose size differs from the image is resized with
    nearest neighbour.

    Args:
        mask_dir: the mask folder.
        dataset_root: the dataset folder the image paths are relative to (None:
            use the file name only).
        noise: degradation strength in [0, 1] (see :func:`degrade_mask`); 0 = as stored.
        allow_missing: a missing mask becomes all ones (the image unmasked) and
            is counted in ``stats["missing"]`` instead of raising DataError.
        name: "synthetic" or "png" (only used in messages and cache keys).
    """

    def __init__(
        self,
        mask_dir: str | Path,
        *,
        dataset_root: str | Path | None = None,
        noise: float = 0.0,
        allow_missing: bool = False,
        name: str = "png",
    ) -> None:
        super().__init__()
        if not 0.0 <= noise <= 1.0:
            raise ConfigError(f"masks.noise={noise} must be in [0, 1]")
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise DataError(
                f"mask folder {self.mask_dir} does not exist: "
                + (
                    "generate the world with `unreid synth` (it writes ROOT/masks)"
                    if name == "synthetic"
                    else "set masks.mask_dir (--mask-dir) to the folder of mask PNGs"
                )
            )
        self.dataset_root = os.path.abspath(dataset_root) if dataset_root is not None else None
        self.noise = float(noise)
        self.allow_missing = allow_missing
        self.name = name

    def relative_name(self, path: str) -> str:
        """The image path relative to the dataset root (posix), or its file name."""
        return relative_image_name(path, self.dataset_root)

    def mask_path(self, path: str) -> Path | None:
        """The mask file of image ``path`` (mirrored, then flat), or None when absent."""
        rel = Path(self.relative_name(path))
        for candidate in (
            self.mask_dir / rel.with_suffix(".png"),
            self.mask_dir / f"{rel.stem}.png",
        ):
            if candidate.is_file():
                return candidate
        return None

    def check(self, paths: Sequence[str]) -> int:
        missing = [p for p in paths if self.mask_path(p) is None]
        if missing and not self.allow_missing:
            first = ", ".join(self.relative_name(p) for p in missing[:5])
            raise DataError(
                f"{len(missing)} of {len(paths)} images have no mask in {self.mask_dir} "
                f"(first: {first}): add them, or pass --allow-missing-masks "
                "(masks.allow_missing=true) to use the unmasked image"
            )
        return len(missing)

    def _masks(
        self, images: np.ndarray | None, paths: Sequence[str], height: int, width: int
    ) -> np.ndarray:
        out = np.ones((len(paths), 1, height, width), dtype=np.float32)
        for i, path in enumerate(paths):
            mask_file = self.mask_path(path)
            if mask_file is None:
                if not self.allow_missing:
                    self.check([path])  # raises the DataError naming it
                self.stats["missing"] += 1
                continue
            fg = read_mask_png(mask_file)
            if self.noise > 0:
                seed = zlib.crc32(self.relative_name(path).encode())
                fg = degrade_mask(fg, self.noise, seed)
            out[i, 0] = resize_nearest(fg, height, width)
        return out

    def cache_key(self, paths: Sequence[str]) -> str:
        # mask files can be regenerated: their stat enters the key
        stats = []
        for p in paths:
            f = self.mask_path(p)
            st = f.stat() if f is not None else None
            stats.append(f"{f}:{st.st_mtime_ns}:{st.st_size}" if st else "-")
        digest = zlib.crc32("\n".join(stats).encode())
        return (
            f"{super().cache_key(paths)}:{self.mask_dir}:{self.noise}:{self.allow_missing}:"
            f"{digest:08x}"
        )


def degrade_mask(mask: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Simulate an imperfect parser: deterministic damage to a bool (h, w) mask.

    Model, with strength ``noise`` in [0, 1] and ``s = min(h, w)``:

    1. boundary error: dilation or erosion (one of the two, p = 0.5) with a disk
       of radius ``round(0.1 * noise * s)`` pixels (6 px at noise 1 on a 64 px
       wide crop): the mask bleeds into the background or loses thin limbs;
    2. blob errors: ``Poisson(4 * noise)`` ellipses with semi-axes uniform in
       [0.05 s, 0.2 s] at uniform positions flip the mask inside (phantom
       foreground on the background, holes in the person).

    ``seed`` (the provider uses a CRC of the image's relative path) makes the
    damage of an image the same in every run and on every machine; noise 0
    returns the mask unchanged.
    """
    if noise <= 0:
        return mask
    rng = np.random.default_rng([seed, 2**16])
    h, w = mask.shape
    s = min(h, w)
    out = mask.astype(bool)
    dilate = rng.random() < 0.5
    radius = round(0.1 * noise * s)
    if radius > 0:
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        disk = yy**2 + xx**2 <= radius**2
        op = ndimage.binary_dilation if dilate else ndimage.binary_erosion
        out = op(out, structure=disk, border_value=0)
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(rng.poisson(4 * noise)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ay, ax = rng.uniform(0.05 * s, 0.2 * s, size=2)
        out ^= ((rows - cy) / ay) ** 2 + ((cols - cx) / ax) ** 2 <= 1.0
    return out


class MediaPipeMaskProvider(MaskProvider):
    """Person segmentation with MediaPipe's selfie segmenter, offline (``mediapipe==0.10.14``).

    Uses the legacy ``mediapipe.solutions.selfie_segmentation`` graph, one crop
    at a time on the CPU. The confidence map is thresholded at ``threshold``
    (0.5: the model's own decision boundary, a probability). Empty masks fall
    back to the unmasked image (see :class:`MaskProvider`).

    Args:
        model_selection: 0 = the general model (256 x 256 input), 1 = the
            landscape model (144 x 256). The default 0 is the better one for
            tall pedestrian crops (IoU against the synthetic world's ground-truth
            masks, measured when the provider was added).
        threshold: confidence threshold in (0, 1).
        min_foreground: foreground fraction below which a mask counts as empty.
    """

    name = "mediapipe"
    needs_images = True

    def __init__(
        self, *, model_selection: int = 0, threshold: float = 0.5, min_foreground: float = 0.01
    ) -> None:
        super().__init__()
        try:
            import mediapipe as mp  # the masks extra
        except ImportError:
            raise ConfigError(
                "masks.provider=mediapipe needs the mediapipe package: "
                "pip install mediapipe==0.10.14 (or unreid[masks])"
            ) from None
        self._version = mp.__version__
        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=model_selection
        )
        self.model_selection = model_selection
        self.threshold = threshold
        self.min_foreground = min_foreground
        self.seconds = 0.0
        self.crops = 0

    @property
    def ms_per_crop(self) -> float:
        """Mean wall-clock milliseconds per crop so far (segmentation only)."""
        return 1000.0 * self.seconds / max(self.crops, 1)

    def confidence(self, image_hwc: np.ndarray) -> np.ndarray:
        """float32 (h, w) person confidence of one RGB uint8 (h, w, 3) crop."""
        start = time.perf_counter()
        result = self._segmenter.process(np.ascontiguousarray(image_hwc))
        self.seconds += time.perf_counter() - start
        self.crops += 1
        conf = result.segmentation_mask
        if conf is None:  # no output at all: treat as "no person"
            return np.zeros(image_hwc.shape[:2], dtype=np.float32)
        return np.asarray(conf, dtype=np.float32)

    def _masks(
        self, images: np.ndarray | None, paths: Sequence[str], height: int, width: int
    ) -> np.ndarray:
        if images is None:
            raise ValueError("the mediapipe provider needs the images")
        out = np.empty((len(images), 1, height, width), dtype=bool)
        for i, img in enumerate(images):
            out[i, 0] = self.confidence(img.transpose(1, 2, 0)) > self.threshold
        return out

    def cache_key(self, paths: Sequence[str]) -> str:
        return (
            f"{super().cache_key(paths)}:{self._version}:m{self.model_selection}:t{self.threshold}"
        )

    def close(self) -> None:
        self._segmenter.close()


def build_mask_provider(
    name: str,
    *,
    mask_dir: str | Path | None = None,
    noise: float = 0.0,
    allow_missing: bool = False,
    dataset_root: str | Path | None = None,
) -> MaskProvider:
    """A provider by name (``masks.provider``): none | synthetic | png | mediapipe.

    ``synthetic`` reads ``mask_dir`` or else ``DATASET_ROOT/masks`` (written by
    ``unreid synth``); ``png`` needs ``mask_dir``. ``noise`` degrades file masks
    (see :func:`degrade_mask`).
    """
    if name == "none":
        return NoMaskProvider()
    if name == "mediapipe":
        return MediaPipeMaskProvider()
    if name in ("synthetic", "png"):
        if mask_dir is None:
            if name == "png" or dataset_root is None:
                raise ConfigError(
                    f"masks.provider={name} needs masks.mask_dir (--mask-dir): the folder of "
                    "mask PNGs mirroring the image names"
                )
            mask_dir = Path(dataset_root) / "masks"
        return FileMaskProvider(
            mask_dir,
            dataset_root=dataset_root,
            noise=noise,
            allow_missing=allow_missing,
            name=name,
        )
    raise ConfigError(f"masks.provider={name!r} is unknown: use one of {', '.join(PROVIDERS)}")
