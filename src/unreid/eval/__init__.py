"""Evaluation: mAP / CMC / mINP under the Market-1501 or all-gallery protocol, exact and
memory-bounded."""

from unreid.eval.metrics import (
    EvalResult,
    cosine_distance,
    evaluate,
    evaluate_features,
    evaluate_npz,
    evaluate_protocol,
)
from unreid.eval.protocol import PROTOCOLS, Protocol, resolve_protocol, self_matches
from unreid.eval.split import evaluate_split

__all__ = [
    "EvalResult",
    "cosine_distance",
    "evaluate",
    "evaluate_features",
    "evaluate_npz",
    "evaluate_protocol",
    "PROTOCOLS",
    "Protocol",
    "resolve_protocol",
    "self_matches",
    "evaluate_split",
]
