"""Classification losses of the RSL / PUL / supervised heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_smooth", "soft_cross_entropy"]


def cross_entropy_smooth(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1
) -> torch.Tensor:
    """Cross entropy with label smoothing (Szegedy et al.; the re-ID "LSR" loss).

    The target distribution is ``(1 - epsilon) * one_hot + epsilon / C``.

    Args:
        logits: (B, C) float.
        targets: (B,) int64 class ids; -1 marks samples without a label, which
            are ignored (the mean is over the labelled ones).
        epsilon: smoothing mass in [0, 1).

    Returns:
        scalar: mean over labelled samples; 0 (still differentiable) when none is.
    """
    # Masking instead of ignore_index + an "any labelled?" test avoids a host
    # sync per step on CUDA and returns 0 instead of NaN for an all -1 batch.
    labelled = (targets >= 0).to(torch.float32)
    per_sample = F.cross_entropy(
        logits.float(), targets.clamp(min=0), label_smoothing=float(epsilon), reduction="none"
    )
    return (per_sample * labelled).sum() / labelled.sum().clamp(min=1.0)


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c q_c log softmax(logits)_c`` (RSL's soft-label loss).

    Args:
        logits: (B, C) float.
        soft_targets: (B, C) float, each row a distribution (rows are used as given).

    Returns:
        scalar; 0 (still differentiable) for an empty batch.
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} vs soft targets {tuple(soft_targets.shape)}"
        )
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(soft_targets.to(log_p.dtype) * log_p).sum(dim=1).mean()
