"""Export a trained checkpoint to ONNX, checked against PyTorch with onnxruntime.

The exported graph is the whole eval-mode :class:`~unreid.models.ReIDModel`,
input normalisation included, so a deployment feeds plain RGB in [0, 1]:

- input ``images``: float32 (B, 3, H, W), RGB in [0, 1] (``uint8 / 255``), at
  the run's ``data.height`` x ``data.width``; B is a dynamic axis;
- output ``features``: float32 (B, D), L2-normalised BN-neck features (cosine
  distance = 1 - dot product), the same as ``unreid extract`` writes.

It uses torch's TorchScript-based exporter (``dynamo=False``): the
torch.export-based one needs the ``onnxscript`` package, which the ``onnx``
extra does not install.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unreid.apps.inference import load_model_from_checkpoint
from unreid.engine.checkpoint import resolve_checkpoint
from unreid.errors import UnreidError
from unreid.io import atomic_path, first_line, refuse_overlap

__all__ = ["CHECK_BATCH_SIZES", "ExportResult", "OnnxExportError", "TOLERANCE", "export_onnx"]

TOLERANCE = 1e-4  # max abs difference of the features, ONNX vs PyTorch
CHECK_BATCH_SIZES = (1, 3)  # two batch sizes: the batch axis really is dynamic
_EXPORT_BATCH = 2
INPUT_NAME = "images"
OUTPUT_NAME = "features"


class OnnxExportError(UnreidError, RuntimeError):
    """The ONNX exporter failed or its model does not reproduce the PyTorch features."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    path: the .onnx file. opset: ONNX opset version. input_shape: ("B", 3, H, W)
    with a dynamic batch. feature_dim: D. max_abs_diff: largest |ONNX - PyTorch|
    over the check batches, or None when onnxruntime is not installed (not checked).
    """

    path: Path
    opset: int
    input_shape: tuple[str, int, int, int]
    feature_dim: int
    max_abs_diff: float | None

    def summary(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        diff = (
            "not checked (onnxruntime is not installed)"
            if self.max_abs_diff is None
            else f"{self.max_abs_diff:.2e} (batches {', '.join(map(str, CHECK_BATCH_SIZES))})"
        )
        return (
            f"exported to {self.path}\n"
            f"  opset {self.opset}; input {INPUT_NAME!r} float32 {shape} RGB in [0, 1]; "
            f"output {OUTPUT_NAME!r} float32 Bx{self.feature_dim} L2-normalised\n"
            f"  max abs difference vs PyTorch: {diff}"
        )


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = 17) -> ExportResult:
    """Export ``checkpoint`` (a checkpoint.pt or a RUN_DIR) to the ONNX file ``out``.

    The model's input is ``images``: float32 (B, 3, H, W) RGB in [0, 1] at the
    run's ``cfg.data.height`` x ``cfg.data.width`` (normalisation is inside the
    model), B dynamic; its output ``features`` is (B, D) float32 with unit rows.
    The file is written atomically (:func:`unreid.io.atomic_path`). When
    onnxruntime is installed, the ONNX model is run on the same seeded random
    inputs as PyTorch at batch sizes 1 and 3 before ``out`` is replaced.

    Raises:
        WeightsError: missing or unreadable checkpoint.
        UnreidError: the ``onnx`` package is not installed.
        OnnxExportError: the exporter fails, or ONNX differs from PyTorch by more
            than ``TOLERANCE`` (``out`` is then left untouched).
    """
    # a missing checkpoint is reported before the extra; --out never replaces it
    refuse_overlap(out, resolve_checkpoint(checkpoint), what="the checkpoint it reads")
    onnx = _import_onnx()
    if not 7 <= int(opset) <= 25:
        raise OnnxExportError(f"--opset {opset}: use an ONNX opset between 7 and 25 (default 17)")
    model, cfg = load_model_from_checkpoint(checkpoint, "cpu")
    model = model.float().eval()
    h, w = int(cfg.data.height), int(cfg.data.width)
    dim = int(getattr(model, "feature_dim", 0))

    out = Path(out)
    with atomic_path(out) as tmp:
        _export(model, tmp, h, w, int(opset))
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as exc:
            raise OnnxExportError(
                f"the exported model {out.name} fails onnx.checker ({first_line(exc)}); "
                f"try another --opset"
            ) from None
        diff = _compare_with_torch(model, tmp, h, w)
        if diff is not None and not diff <= TOLERANCE:
            raise OnnxExportError(
                f"ONNX export of {checkpoint} differs from PyTorch by {diff:.2e} (> {TOLERANCE:g})"
                f"; {out} was not written: try another --opset or report the backbone "
                f"{cfg.model.backbone}"
            )
    return ExportResult(out, int(opset), ("B", 3, h, w), dim, diff)


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise UnreidError(
            "ONNX export needs the onnx package: install the onnx extra: pip install -e .[onnx]"
        ) from None
    return onnx


def _export(model: torch.nn.Module, path: Path, h: int, w: int, opset: int) -> None:
    example = torch.rand(_EXPORT_BATCH, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter's own deprecation notice and tracer warnings
            # (shape arithmetic frozen at H x W, which is the point) are noise here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
    except UnreidError:
        raise
    except Exception as exc:
        raise OnnxExportError(
            f"torch.onnx.export failed at opset {opset} ({first_line(exc)}); try another --opset"
        ) from None


def _compare_with_torch(model: torch.nn.Module, path: Path, h: int, w: int) -> float | None:
    """Max abs difference of ONNX vs PyTorch features over the check batches, or None
    without onnxruntime."""
    try:
        import onnxruntime as ort  # the onnx extra; without it the export goes unchecked
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise OnnxExportError(
            f"onnxruntime cannot load the exported model ({first_line(exc)}); try another --opset"
        ) from None
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in CHECK_BATCH_SIZES:
        x = torch.rand(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x).float().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != ref.shape:
            raise OnnxExportError(
                f"ONNX model returns shape {got.shape} for a batch of {batch}, PyTorch "
                f"{ref.shape}: the batch axis is not dynamic; try another --opset"
            )
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref))))
    return worst

