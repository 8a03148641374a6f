"""data stage of the unreid pipeline: dataset layouts -> tables of (path, pid, camid),
decoded-image cache, batch augmentations, samplers and the synthetic world."""

from unreid.data.dataset import (
    IMAGE_EXTENSIONS,
    Dataset,
    Split,
    detect_layout,
    list_images,
    load_dataset,
)
from unreid.data.images import decode_image, load_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "Dataset",
    "Split",
    "decode_image",
    "detect_layout",
    "list_images",
    "load_dataset",
    "load_images",
]
