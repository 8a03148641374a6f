"""Training methods: how pseudo-labels are made and which loss head trains on them.

One file per method, registered by name (``@register_method``); the engine
builds the configured one with :func:`build_method` and never knows which runs.
"""

from unreid.methods.base import LabelInputs, Method, PseudoLabels, identity_gather
from unreid.methods.registry import (
    available_methods,
    build_method,
    get_method,
    model_feature,
    register_method,
)

__all__ = [
    "LabelInputs",
    "Method",
    "PseudoLabels",
    "available_methods",
    "build_method",
    "get_method",
    "identity_gather",
    "model_feature",
    "register_method",
]
