"""run.precision: detection, per-phase resolution, the probe, and extraction honouring it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unreid.config import ModelConfig
from unreid.errors import ConfigError
from unreid.models import build_model, extract_features
from unreid.models.precision import (
    Precision,
    cpu_bf16_native,
    extraction_precision,
    resolve_precision,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
X86_FLAGS = "fpu vme sse sse2 avx2 avx512f avx512bw avx512vl"


def cpuinfo(tmp_path: Path, flags: str, key: str = "flags") -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    return str(path)


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        (X86_FLAGS, False),  # AVX-512 without BF16: bf16 would be emulated
        (X86_FLAGS + " avx512_bf16", True),  # e.g. AMD Zen 4, Intel Cooper Lake
        (X86_FLAGS + " amx_tile amx_bf16", True),  # Intel Sapphire Rapids and later
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, flags: str, native: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unreid.models.precision.platform.machine", lambda: "x86_64")
    assert cpu_bf16_native.__wrapped__(cpuinfo(tmp_path, flags)) is native


def test_arm_bf16_feature_and_unreadable_cpuinfo(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unreid.models.precision.platform.machine", lambda: "aarch64")
    detect = cpu_bf16_native.__wrapped__
    assert detect(cpuinfo(tmp_path, "fp asimd sve bf16", key="Features")) is True
    assert detect(cpuinfo(tmp_path, "fp asimd sve", key="Features")) is False
    assert detect(str(tmp_path / "missing")) is False


@pytest.mark.parametrize(
    ("spec", "device", "phase", "native", "expected"),
    [
        ("fp32", CPU, "extract", True, "fp32"),
        ("bf16", CPU, "train", False, "bf16"),  # asked for explicitly: honoured
        ("bf16", CUDA, "train", False, "bf16"),
        ("fp16", CUDA, "extract", False, "fp16"),
        ("auto", CUDA, "train", False, "fp16"),
        ("auto", CUDA, "extract", True, "fp16"),
        ("auto", CPU, "train", True, "fp32"),  # bf16 steps were slower, even with AMX
        ("auto", CPU, "extract", False, "fp32"),  # never bf16 without native support
        ("auto", CPU, "extract", True, "bf16"),  # subject to the probe
    ],
)
def test_precision_per_phase(spec: str, device: torch.device, phase: str, native: bool,
                             expected: str) -> None:
    choice = resolve_precision(spec, device, phase, bf16_native=native)
    assert choice.name == expected
    assert (choice.reason == "probe") == (spec == "auto" and device == CPU and expected == "bf16")


def test_fp16_on_cpu_and_unknown_names_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU, "train")
    with pytest.raises(ConfigError, match="run.precision='half' is unknown"):
        resolve_precision("half", CPU, "train")


class AutocastRecorder(nn.Module):
    """Records whether CPU autocast was on, and its dtype, at each forward pass."""

    feature_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.lin(x.mean((2, 3)))


@pytest.mark.parametrize(("name", "enabled"), [("fp32", False), ("bf16", True)])
def test_extraction_runs_in_the_chosen_precision(name: str, enabled: bool) -> None:
    net = AutocastRecorder()
    images = np.zeros((5, 3, 4, 4), np.uint8)
    feats = extract_features(net, images, batch_size=2, progress=False, precision=Precision(name))
    assert feats.dtype == torch.float32 and feats.shape == (5, 4)
    assert [s[0] for s in net.seen] == [enabled] * 3
    if enabled:
        assert {s[1] for s in net.seen} == {torch.bfloat16}


@pytest.fixture(scope="module")
def model_and_images() -> tuple[nn.Module, np.ndarray]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", channels_last=False))
    with torch.no_grad():
        model.train()(torch.rand(16, 3, 64, 32))  # non-trivial BN statistics
    images = np.random.default_rng(0).integers(0, 256, size=(24, 3, 64, 32), dtype=np.uint8)
    return model.eval(), images


def test_channels_last_model_gives_the_same_features(model_and_images) -> None:
    model, images = model_and_images
    cl = build_model(ModelConfig(backbone="tiny_cnn", channels_last=True))
    cl.load_state_dict(model.state_dict())
    convs = [m for m in cl.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    a = extract_features(model, images, batch_size=8, progress=False)
    b = extract_features(cl, images, batch_size=8, progress=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_features_agree_with_fp32(model_and_images) -> None:
    model, images = model_and_images
    a = extract_features(model, images, batch_size=8, progress=False)
    b = extract_features(model, images, batch_size=8, progress=False, precision=Precision("bf16"))
    # tiny_cnn, seeds 0-3 on AMD EPYC (AVX-512 BF16): min cosine 0.99997; the parity bar
    # for auto is PARITY_COSINE = 0.999, so this margin clears it on any rounding
    assert (a * b).sum(1).min() > 0.9995


def test_auto_extraction_checks_parity_only_where_bf16_is_native(model_and_images,
                                                                 monkeypatch) -> None:
    model, images = model_and_images
    sample = torch.from_numpy(images[:8])
    plain = extraction_precision("auto", model, CPU, sample, bf16_native=False)
    assert plain == Precision("fp32", "auto: this CPU has no native bf16")
    probed = extraction_precision("auto", model, CPU, sample, bf16_native=True)
    assert probed.name == "bf16" and "min cosine to fp32 0.99" in probed.reason
    assert model.training is False  # the check restores the mode it found
    assert extraction_precision("fp32", model, CPU, sample) == Precision("fp32", "run.precision")
    # a model whose bf16 features drift is kept in fp32
    monkeypatch.setattr("unreid.models.precision.bf16_parity", lambda *a, **k: 0.99)
    drifted = extraction_precision("auto", model, CPU, sample, bf16_native=True)
    assert drifted.name == "fp32" and "too far" in drifted.reason
