"""Training methods: how pseudo-labels are made and which loss head trains on them.

One file per method, registered by name (``@register_method``); the engine
builds the configured one with :func:`build_method` and never knows which runs.

What belongs here and what in :mod:`unreid.cluster`: a function of arrays,
tensors and plain numbers only (features, labels, camera ids, k, eps, a seed)
is a clustering step and lives in ``cluster/``, tested exactly there. A method
is composition: it decides *when* and *with what* those functions run (which
config knobs, which features, the seed of an epoch, what to do when nothing
clusters) and which head trains on the result. A method file therefore reads
the config and calls ``cluster/`` functions; it holds no clustering algorithm
of its own.

The package:

- ``base``: the :class:`Method` interface and the label containers;
- ``registry``: methods by name;
- ``heads``: the bases a method subclasses for its head,
  :class:`~unreid.methods.heads.MemoryMethod` (cluster memory) and
  :class:`~unreid.methods.heads.ClassifierMethod` (the model's FC);
- ``common``: helpers every method may use (camera ids or zeros, the seed of an
  epoch, the "no cluster" error);
- one file per method: ``cluster_contrast``, ``sfe_cr``, ``rsl``, ``pul``,
  ``supervised``.
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
