"""Training augmentations on whole uint8 batches, on the training device.

Images come from the decoded cache as uint8 (B, 3, h, w); the augmentation
returns float32 (B, 3, H, W) in [0, 1] on the same device (the model applies its
weights' own normalisation). Every operation is vectorised over the batch:
flips and pad-and-crop are per-sample integer index maps applied with
``gather``, shifts and rotations one ``affine_grid`` / ``grid_sample``, random
erasing a boolean mask. So the 2 CPU cores (or the GPU) go to the network, not
to a per-image PIL loop.

Randomness comes only from the ``torch.Generator`` passed in, and each call
draws a fixed number of random values for a given batch size, so a run is
reproducible and resumable from the generator state. The generator may live on
another device than the images (e.g. CPU generator, CUDA images): parameters
are drawn on the generator's device and then moved.

Presets (``build_augment``):

- ``cluster_contrast`` (cluster-contrast-reid's train transform): resize to
  H x W, horizontal flip p=0.5, ``T.Pad(10)`` (constant 0, torchvision's
  default) + random crop back to H x W, random erasing p=0.5 with area
  0.02-0.4 of the image and aspect ratio uniform in [0.3, 1/0.3], up to 100
  attempts per image as in Zhong et al.'s code.
  One deliberate difference: cluster-contrast erases *after* normalisation
  with the values (0.485, 0.456, 0.406), i.e. in pixel space it paints
  (0.596, 0.558, 0.497); here the erased box is painted with the ImageNet mean
  in pixel space, which is what the fill value means (it becomes 0 after the
  ImageNet normalisation) and stays meaningful for weights with another input
  transform. ``erase_fill`` changes it.
- ``rsl`` (the Keras ``ImageDataGenerator`` of PUL, which RSL reuses):
  random shift of up to 0.2 x the image size in each direction (0.2 x 224 =
  45 px at the paper's 224 x 224; expressed as a fraction so it scales with
  the input size), rotation uniform within +-20 degrees about the centre,
  bilinear interpolation, border pixels repeated outside the image (Keras
  ``fill_mode='nearest'``). PUL's generator has ``horizontal_flip=False``, so
  the preset does not flip; ``flip_p`` turns it on.
- ``none``: resize only (test time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from unreid.errors import ConfigError

__all__ = ["IMAGENET_MEAN", "AUGMENT_PRESETS", "BatchAugment", "affine_warp", "build_augment"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)


@dataclass(frozen=True)
class BatchAugment:
    """One parameterised batch pipeline; every step is off at its zero value.

    Order: resize -> flip -> pad + random crop -> shift/rotate -> random erasing.

    Attributes:
        height, width: output size in pixels.
        flip_p: probability of a horizontal flip.
        pad: zero padding in pixels before the random crop back to H x W (0 = off).
        max_shift: largest translation as a fraction of the height/width (0 = off).
        max_rotation_deg: largest rotation in degrees (0 = off).
        erase_p: probability of random erasing (0 = off).
        erase_area: (min, max) erased fraction of the image area.
        erase_aspect: min aspect ratio r; the ratio is uniform in [r, 1/r].
        erase_attempts: boxes tried per image; the first that fits is used.
        erase_fill: RGB fill value in [0, 1].
    """

    height: int
    width: int
    flip_p: float = 0.0
    pad: int = 0
    max_shift: float = 0.0
    max_rotation_deg: float = 0.0
    erase_p: float = 0.0
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_aspect: float = 0.3
    erase_attempts: int = 100
    erase_fill: tuple[float, float, float] = IMAGENET_MEAN

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, h, w) -> float32 (B, 3, H, W) in [0, 1], same device."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"expected uint8 (B, C, h, w) images, got {images.dtype} {tuple(images.shape)}"
            )
        b = images.shape[0]
        # Flip and pad-and-crop only move whole pixels, so they run on the uint8
        # images (4x less memory traffic) unless a resize must come first.
        resized = images.shape[-2:] != (self.height, self.width)
        x = resize_batch(images, self.height, self.width) if resized else images
        if self.flip_p > 0 or self.pad > 0:
            flip = _rand(generator, (b,), x.device) < self.flip_p
            offsets = _randint(generator, (b, 2), 2 * self.pad + 1, x.device) - self.pad
            x, valid = _flip_and_shift(x, flip, offsets)
            x = (x if resized else x.float().div_(255.0)).mul_(valid)
        elif not resized:
            x = x.float().div_(255.0)
        if self.max_shift > 0 or self.max_rotation_deg > 0:
            u = _rand(generator, (b, 3), x.device) * 2 - 1
            angle = u[:, 0] * self.max_rotation_deg
            shift = (
                u[:, 1:]
                * self.max_shift
                * torch.tensor([self.width, self.height], dtype=u.dtype, device=u.device)
            )
            x = affine_warp(x, angle, shift)
        if self.erase_p > 0:
            x = self._erase(x, generator)
        return x

    def _erase(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random erasing (Zhong et al.) for the whole batch at once.

        Each image tries ``erase_attempts`` boxes drawn like the reference
        loop (area, aspect, rounding) and keeps the first that fits strictly
        inside, exactly as the loop's ``break`` would.
        """
        b, _, h, w = x.shape
        a = self.erase_attempts
        u = _rand(generator, (b, a + 1, 4), x.device)
        apply = u[:, 0, 0] < self.erase_p
        lo, hi = self.erase_area
        area = (lo + (hi - lo) * u[:, 1:, 0]) * (h * w)
        r = self.erase_aspect
        aspect = r + (1 / r - r) * u[:, 1:, 1]
        eh = torch.round(torch.sqrt(area * aspect))
        ew = torch.round(torch.sqrt(area / aspect))
        fits = (eh < h) & (ew < w)
        first = torch.argmax(fits.to(torch.uint8), dim=1)  # first fitting attempt
        pick = torch.arange(b, device=x.device), first
        apply &= fits[pick]
        eh, ew = eh[pick], ew[pick]
        top = torch.floor(u[:, 1:, 2][pick] * (h - eh + 1))
        left = torch.floor(u[:, 1:, 3][pick] * (w - ew + 1))
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
        mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
        fill = torch.tensor(self.erase_fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return torch.where(mask[:, None], fill, x)


AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "cluster_contrast": {"flip_p": 0.5, "pad": 10, "erase_p": 0.5},
    "rsl": {"max_shift": 0.2, "max_rotation_deg": 20.0},
    "none": {},
}


def build_augment(name: str, height: int, width: int, **overrides: Any) -> BatchAugment:
    """The named preset (see the module docstring) at H x W, with optional field overrides."""
    if name not in AUGMENT_PRESETS:
        raise ConfigError(
            f"method.augment={name!r} is unknown: use one of {sorted(AUGMENT_PRESETS)}"
        )
    aug = BatchAugment(height=height, width=width, **AUGMENT_PRESETS[name])
    return replace(aug, **overrides) if overrides else aug


def resize_batch(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (B, C, h, w) -> float32 (B, C, H, W) in [0, 1]; bilinear with antialiasing.

    The decoded cache already stores images at the training size, so this is
    usually just the conversion to float.
    """
    x = images.float().div_(255.0)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(
            x, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        ).clamp_(0.0, 1.0)
    return x


def affine_warp(x: torch.Tensor, angle_deg: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre and translate it; borders are repeated.

    Args:
        x: float (B, C, H, W).
        angle_deg: (B,) counter-clockwise rotation in degrees (as seen on screen).
        shift_px: (B, 2) translation (dx right, dy down) in pixels.

    Returns:
        float (B, C, H, W), bilinear samples; the zero transform is the identity.
    """
    b, _, h, w = x.shape
    t = torch.deg2rad(angle_deg.to(x.dtype))
    cos, sin = torch.cos(t), torch.sin(t)
    # affine_grid maps *output* normalised coordinates to *input* ones. In pixel
    # units the inverse map is p_in = R(-angle) (p_out - shift); normalised
    # coordinates scale x by 2/W and y by 2/H, hence the aspect factors, which
    # keep the rotation rigid on non-square images.
    dx = shift_px[:, 0].to(x.dtype) * 2 / w
    dy = shift_px[:, 1].to(x.dtype) * 2 / h
    # screen rotation is clockwise in (x right, y down) coordinates for positive
    # math angles, so the inverse of a counter-clockwise turn uses +sin here.
    a00, a01 = cos, -sin * h / w
    a10, a11 = sin * w / h, cos
    theta = torch.stack(
        [
            torch.stack([a00, a01, -(a00 * dx + a01 * dy)], dim=1),
            torch.stack([a10, a11, -(a10 * dx + a11 * dy)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _flip_and_shift(
    x: torch.Tensor, flip: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip (B,) bool, then pad-and-crop as an integer shift (B, 2) (dy, dx).

    Cropping an H x W window at (top, left) out of the image zero-padded by
    ``pad`` reads source pixel (i + top - pad, j + left - pad): a per-sample
    integer offset in [-pad, pad]. Returns the gathered pixels (same dtype as
    ``x``) and a bool (B, 1, H, W) mask that is False where the padding shows
    (the caller multiplies by it: zero fill).
    """
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :] + offsets[:, :1]  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] + offsets[:, 1:]  # (B, W) in flipped image
    cols = torch.where(flip[:, None], w - 1 - cols, cols)  # flipped column c is source W-1-c
    valid = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[
        :, None, None, :
    ]
    # one gather over the flattened plane is the fastest form on CPU
    flat = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    out = torch.gather(x.reshape(b, c, h * w), 2, flat.view(b, 1, h * w).expand(b, c, h * w))
    return out.view(b, c, h, w), valid


def _rand(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randint(
    generator: torch.Generator, shape: tuple[int, ...], high: int, device: torch.device
) -> torch.Tensor:
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device)
