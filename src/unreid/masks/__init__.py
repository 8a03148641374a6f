"""Foreground (person) masks behind one small interface.

``provider(images uint8 (B, 3, H, W), paths) -> masks float (B, 1, H, W) in [0, 1]``,
built by name with :func:`build_mask_provider`: ``none``, ``synthetic`` (the
ground truth ``unreid synth`` writes, optionally degraded), ``png`` (masks from
any parser, e.g. SCHP label maps) and ``mediapipe`` (offline segmentation).
:func:`precompute_masks` writes a dataset's masks once (``unreid masks``);
:func:`load_masks` gives the engine a split's masks at the training size, cached.
"""

from unreid.masks.base import MaskProvider
from unreid.masks.precompute import MaskSummary, load_masks, precompute_masks
from unreid.masks.providers import (
    FileMaskProvider,
    MediaPipeMaskProvider,
    NoMaskProvider,
    build_mask_provider,
    degrade_mask,
)

__all__ = [
    "FileMaskProvider",
    "MaskProvider",
    "MaskSummary",
    "MediaPipeMaskProvider",
    "NoMaskProvider",
    "build_mask_provider",
    "degrade_mask",
    "load_masks",
    "precompute_masks",
]
