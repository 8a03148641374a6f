"""unreid export: the ONNX model reproduces the PyTorch features at any batch size."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

from unreid.apps.export import TOLERANCE, ExportResult, OnnxExportError, export_onnx
from unreid.apps.inference import load_model_from_checkpoint
from unreid.cli import main
from unreid.config import load_config, to_container
from unreid.engine.checkpoint import model_signature, save_checkpoint
from unreid.errors import UnreidError, WeightsError
from unreid.models import build_model

H, W = 64, 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as the trainer writes it, for a tiny_cnn + GeM model whose BN layers
    hold non-trivial running statistics (so the export must keep them)."""
    cfg = load_config([], ["data.root=unused", f"data.height={H}", f"data.width={W}",
                           "model.backbone=tiny_cnn", "model.pooling=gem"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, H, W))
    cfg_dict = to_container(cfg)
    state = {"config": cfg_dict, "model_signature": model_signature(model, cfg_dict),
             "model": model.state_dict(), "num_classes": 0}
    return save_checkpoint(state, tmp_path_factory.mktemp("export") / "checkpoint.pt")


@pytest.fixture(scope="module")
def onnx():
    return pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def ort(onnx):
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(ckpt: Path, ort, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_export_reports_what_it_wrote(exported: ExportResult) -> None:
    assert exported.path.is_file() and exported.opset == 17
    assert exported.input_shape == ("B", 3, H, W) and exported.feature_dim == 96
    assert exported.max_abs_diff is not None and exported.max_abs_diff <= TOLERANCE
    assert not list(exported.path.parent.glob(".*tmp*"))  # no temp file left behind


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch_at_any_batch_size(
    exported: ExportResult, ckpt: Path, ort, batch: int
) -> None:
    model, _ = load_model_from_checkpoint(ckpt)
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and inp.type == "tensor(float)" and inp.shape[1:] == [3, H, W]
    assert outp.name == "features"
    x = torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(batch))
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (batch, 96)
    assert np.abs(got - ref).max() <= 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # unit features


def test_cli_prints_path_opset_shape_and_difference(
    ckpt: Path, onnx, ort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out),
                 "--opset", "13"]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "opset 13" in text and f"Bx3x{H}x{W}" in text
    assert "max abs difference vs PyTorch: " in text
    assert onnx.load(str(out)).opset_import[0].version == 13


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint") and "none.pt" in err and "\n" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_package_says_how_to_install(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(UnreidError, match=r"pip install -e \.\[onnx\]"):
        export_onnx(ckpt, tmp_path / "m.onnx")


def test_a_failed_check_leaves_no_file(
    ckpt: Path, onnx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unreid.apps.export as export

    monkeypatch.setattr(export, "_compare_with_torch", lambda *a: 0.5)
    out = tmp_path / "m.onnx"
    with pytest.raises(OnnxExportError, match="differs from PyTorch by 5.00e-01") as info:
        export_onnx(ckpt, out)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_is_no_checkpoint_is_a_weights_error(onnx, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(WeightsError, match="bad.pt"):
        export_onnx(bad, tmp_path / "m.onnx")
