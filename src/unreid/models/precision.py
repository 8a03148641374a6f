"""Numeric precision and memory layout of the forward pass, per device and phase.

``run.precision`` names what the user wants: ``fp32``, ``bf16`` (autocast to
bfloat16, on CPU or CUDA), ``fp16`` (autocast with a gradient scaler, CUDA only)
or ``auto``. ``auto`` is decided per *phase*, because the two phases gain
differently from reduced precision on a CPU: inference is dominated by the
convolutions, which oneDNN runs natively in bf16 on processors with AVX-512 BF16
or AMX; a training step adds the backward pass and Adam's fp32 master weights,
where the casts cost more than bf16 saves (measured in docs/benchmarks.md).

- ``train``: fp16 on CUDA, fp32 on CPU.
- ``extract`` (features for clustering, evaluation, search): fp16 on CUDA; on
  CPU bf16 only when the processor computes bf16 natively *and* the actual
  model's bf16 features of a few images agree with its fp32 ones to
  ``PARITY_COSINE``; otherwise fp32.

bf16 is never chosen by ``auto`` on a CPU without native support (where it is
emulated and several times slower). Channels-last is a separate switch
(``model.channels_last``), faster on every device measured here.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unreid.errors import ConfigError

__all__ = [
    "PARITY_COSINE",
    "PRECISIONS",
    "Precision",
    "autocast",
    "bf16_parity",
    "cpu_bf16_native",
    "extraction_precision",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 features must agree with fp32 at least this well (cosine, every probe image).
PARITY_COSINE = 0.999

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved choice for one phase: ``name`` in fp32 | bf16 | fp16 and why."""

    name: str
    reason: str = ""

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32 (no autocast)."""
        return _DTYPES[self.name]

    @property
    def needs_grad_scaler(self) -> bool:
        return self.name == "fp16"


@cache
def cpu_bf16_native(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when this CPU computes bf16 natively (x86: AVX-512 BF16 or AMX-BF16;
    Arm: the BF16 extension). Read from ``cpuinfo`` flags; False where unknown."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(
    spec: str, device: torch.device, phase: str, *, bf16_native: bool | None = None
) -> Precision:
    """The precision of ``phase`` ("train" or "extract") on ``device`` for ``spec``.

    ``auto`` for extraction on a CPU with native bf16 resolves to ``bf16`` with
    reason "probe": :func:`extraction_precision` confirms it on the real model.
    Raises ConfigError for fp16 on a CPU.
    """
    if spec not in PRECISIONS:
        raise ConfigError(f"run.precision={spec!r} is unknown: use one of {', '.join(PRECISIONS)}")
    if phase not in ("train", "extract"):
        raise ValueError(f"phase must be 'train' or 'extract', got {phase!r}")
    cuda = device.type == "cuda"
    if spec == "fp16" and not cuda:
        raise ConfigError(
            "run.precision=fp16 needs a CUDA device: on a CPU use bf16 (where the processor "
            "has it) or fp32"
        )
    if spec != "auto":
        return Precision(spec, "run.precision")
    if cuda:
        return Precision("fp16", "auto: CUDA")
    native = cpu_bf16_native() if bf16_native is None else bf16_native
    if phase == "extract" and native:
        return Precision("bf16", "probe")
    if phase == "extract":
        return Precision("fp32", "auto: this CPU has no native bf16")
    return Precision("fp32", "auto: training steps on a CPU are fastest in fp32")


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """The autocast context of ``precision`` (disabled for fp32)."""
    dtype = precision.dtype
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def bf16_parity(model: nn.Module, images: torch.Tensor, *, channels_last: bool) -> float:
    """The worst cosine between bf16 and fp32 eval-mode features of ``model`` on
    ``images`` ((B, 3, H, W) float in [0, 1], on the model's device)."""
    x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    was_training = model.training
    model.eval()
    feats = {}
    try:
        with torch.inference_mode():
            for name in ("fp32", "bf16"):
                with autocast(images.device, Precision(name)):
                    feats[name] = F.normalize(model(x).float(), dim=1)
    finally:
        model.train(was_training)
    return float((feats["fp32"] * feats["bf16"]).sum(1).min())


def extraction_precision(
    spec: str,
    model: nn.Module,
    device: torch.device,
    sample: torch.Tensor,
    *,
    bf16_native: bool | None = None,
) -> Precision:
    """The extraction precision for ``spec``. Under ``auto`` on a CPU with native bf16,
    bf16 when its features on ``sample`` ((B, 3, H, W) uint8 or float in [0, 1]; 64
    images at the run's input size are plenty) agree with fp32 to ``PARITY_COSINE``.

    The decision depends on the processor and the model only, never on timings, so a
    run and its resumption make the same choice.
    """
    choice = resolve_precision(spec, device, "extract", bf16_native=bf16_native)
    if choice.reason != "probe":
        return choice
    x = sample.to(device)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    net = getattr(model, "module", model)
    cos = bf16_parity(model, x, channels_last=bool(getattr(net, "channels_last", False)))
    if cos >= PARITY_COSINE:
        return Precision("bf16", f"auto: native bf16, min cosine to fp32 {cos:.5f}")
    return Precision("fp32", f"auto: bf16 features too far from fp32 (min cosine {cos:.5f})")
