"""models stage of the unreid pipeline: backbones by name, BNNeck head, weights, extraction.

``build_model(cfg.model, num_classes)`` -> :class:`ReIDModel` (images in [0, 1]
in, L2-normalised features out in eval mode, :class:`ModelOutput` in train
mode); ``extract_features(model, uint8 images)`` -> (N, D) float32 on CPU.
"""

from unreid.models.extract import extract_feature_sets, extract_features
from unreid.models.head import GeM, ModelOutput, ReIDHead
from unreid.models.registry import Backbone, create_backbone, list_backbones, register_backbone
from unreid.models.reid_model import ReIDModel, build_model, load_weights_file
from unreid.models.weights import (
    IMAGENET_NORM,
    TF_LITE_NORM,
    Normalization,
    Weights,
    find_imagenet_weights,
    known_weights,
)

__all__ = [
    "IMAGENET_NORM",
    "TF_LITE_NORM",
    "Backbone",
    "GeM",
    "ModelOutput",
    "Normalization",
    "ReIDHead",
    "ReIDModel",
    "Weights",
    "build_model",
    "create_backbone",
    "extract_feature_sets",
    "extract_features",
    "find_imagenet_weights",
    "known_weights",
    "list_backbones",
    "load_weights_file",
    "register_backbone",
]
