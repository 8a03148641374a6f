"""Evaluation: Market-1501-protocol mAP / CMC / mINP, exact and memory-bounded."""

from unreid.eval.metrics import (
    EvalResult,
    cosine_distance,
    evaluate,
    evaluate_features,
    evaluate_npz,
)
from unreid.eval.split import evaluate_split

__all__ = [
    "EvalResult",
    "cosine_distance",
    "evaluate",
    "evaluate_features",
    "evaluate_npz",
    "evaluate_split",
]
