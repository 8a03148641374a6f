"""Which gallery images count for a query: the Market-1501 protocol or all-gallery.

- ``market``: a gallery image of the query's identity taken by the query's camera is
  ignored (too easy), as on Market-1501, DukeMTMC-reID, CUHK03 and MSMT17. On data
  with a single camera this leaves no query a match, so nothing can be scored.
- ``all-gallery``: same-camera matches count; only the query image itself is ignored
  when the gallery holds it too (the same file, matched by resolved path). For one
  camera, or footage without camera labels.
- ``auto``: ``all-gallery`` when the query and gallery images all come from one camera
  (with a one-line note saying so), else ``market``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unreid.errors import ConfigError

__all__ = ["PROTOCOLS", "Protocol", "resolve_protocol", "self_matches"]

PROTOCOLS = ("auto", "market", "all-gallery")


@dataclass(frozen=True)
class Protocol:
    """A resolved protocol: ``name`` is ``market`` or ``all-gallery``; ``note`` is the one
    line to show when ``auto`` chose all-gallery (else None)."""

    name: str
    note: str | None = None

    @property
    def all_gallery(self) -> bool:
        return self.name == "all-gallery"


def resolve_protocol(protocol: str, q_camids: np.ndarray, g_camids: np.ndarray) -> Protocol:
    """The protocol ``protocol`` (one of :data:`PROTOCOLS`) means for these cameras.

    Args:
        protocol: ``auto``, ``market`` or ``all-gallery``.
        q_camids, g_camids: (Q,), (G,) integer camera ids of the query and gallery images.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"eval.protocol={protocol!r} is unknown: use one of {', '.join(PROTOCOLS)}"
        )
    if protocol != "auto":
        return Protocol(protocol)
    cams = np.unique(np.concatenate([np.asarray(q_camids).ravel(), np.asarray(g_camids).ravel()]))
    if len(cams) <= 1:
        return Protocol(
            "all-gallery",
            "note: the query and gallery images come from one camera: evaluating with the "
            "all-gallery protocol (same-camera matches count, the query image itself does "
            "not); set eval.protocol (or --protocol) to choose",
        )
    return Protocol("market")


def self_matches(
    q_paths: Sequence[str] | np.ndarray, g_paths: Sequence[str] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(query index, gallery index) pairs where the gallery image is the query image
    itself: the same file after resolving the path (``os.path.realpath``).

    Returns two (P,) int64 arrays, sorted by query then gallery index.
    """
    where: dict[str, list[int]] = {}
    for j, p in enumerate(g_paths):
        where.setdefault(os.path.realpath(str(p)), []).append(j)
    qi: list[int] = []
    gi: list[int] = []
    for i, p in enumerate(q_paths):
        for j in where.get(os.path.realpath(str(p)), ()):
            qi.append(i)
            gi.append(j)
    return np.asarray(qi, dtype=np.int64), np.asarray(gi, dtype=np.int64)
