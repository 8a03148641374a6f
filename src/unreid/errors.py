"""User-facing errors.

Every problem caused by the user's input (a missing folder, an unreadable
image, a checkpoint from another model, a knob set so that nothing clusters)
raises a subclass of :class:`UnreidError` whose message is ONE line naming the
file or setting at fault and the fix. The CLI prints it as ``error: ...`` and
exits with status 2 instead of showing a traceback from deep inside numpy or
torch.
"""

from __future__ import annotations


class UnreidError(Exception):
    """Base class: a one-line, actionable message for the user."""


class DataError(UnreidError, ValueError):
    """A dataset folder, list file, image or mask is missing or malformed."""


class ConfigError(UnreidError, ValueError):
    """A configuration value is invalid or inconsistent."""


class WeightsError(UnreidError, FileNotFoundError):
    """Pretrained weights or a checkpoint cannot be found or do not fit the model."""


class ClusteringError(UnreidError, ValueError):
    """Clustering input is invalid (NaN features, k >= N, ...)."""


class TrainingError(UnreidError, RuntimeError):
    """Training cannot go on (NaN loss, no clusters); the last good checkpoint is kept."""
