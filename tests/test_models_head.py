"""Head: pooling, BN neck, classifier, train/eval outputs, input normalisation."""

from __future__ import annotations

import pytest
import torch

from unreid.config import ModelConfig
from unreid.errors import ConfigError
from unreid.models import IMAGENET_NORM, GeM, ModelOutput, build_model
from unreid.models.head import AvgPool


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    num_classes = kw.pop("num_classes", 0)
    return build_model(ModelConfig(backbone="tiny_cnn", **kw), num_classes)


def test_bn_neck_bias_is_frozen_at_zero() -> None:
    model = tiny(num_classes=3).train()
    assert model.head.neck.bias.requires_grad is False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1.0)
    out = model(torch.rand(4, 3, 64, 32))
    (out.logits.sum() + out.feat_bn.pow(2).sum()).backward()
    opt.step()
    assert torch.equal(model.head.neck.bias, torch.zeros(96))
    assert model.head.neck.weight.grad is not None


def test_eval_output_is_unit_norm_features() -> None:
    model = tiny().eval()
    with torch.no_grad():
        feats = model(torch.rand(5, 3, 64, 32))
    assert feats.shape == (5, 96) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(5))


def test_train_output_fields() -> None:
    x = torch.rand(4, 3, 64, 32)
    out = tiny().train()(x)
    assert isinstance(out, ModelOutput) and out.logits is None
    assert out.feat_bn.shape == out.feat_norm.shape == (4, 96)
    torch.testing.assert_close(out.feat_norm, torch.nn.functional.normalize(out.feat_bn, dim=1))
    out = tiny(num_classes=7).train()(x)
    assert out.logits.shape == (4, 7)


def test_eval_features_equal_normalised_bn_output_on_normalised_input() -> None:
    model = tiny().eval()
    x = torch.rand(3, 3, 64, 32)
    mean = torch.tensor(IMAGENET_NORM.mean).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORM.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.head(model.backbone((x - mean) / std)).feat_norm
        torch.testing.assert_close(model(x), expected)


def test_gem_with_p_1_equals_average_pooling() -> None:
    x = torch.rand(2, 5, 4, 3) + 0.01
    gem = GeM(p=1.0)
    torch.testing.assert_close(gem(x), AvgPool()(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gem(x), x.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)


def test_gem_hand_made_value_and_learnable_p() -> None:
    x = torch.tensor([1.0, 2.0, 2.0, 1.0]).view(1, 1, 2, 2)
    gem = GeM()  # p = 3: ((1 + 8 + 8 + 1) / 4) ** (1/3) = 4.5 ** (1/3)
    torch.testing.assert_close(gem(x), torch.tensor([[4.5 ** (1 / 3)]]))
    gem(x).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.item() != 0.0
    assert GeM(p=50.0)(x).item() == pytest.approx(2.0, rel=0.03)  # p -> inf: max pooling


def test_reset_classifier_from_centres_gives_exact_dot_products() -> None:
    model = tiny().train()
    centres = torch.nn.functional.normalize(torch.randn(6, 96), dim=1)
    model.reset_classifier(6, centres)
    assert model.num_classes == 6
    assert torch.equal(model.head.classifier.weight.detach(), centres)
    out = model(torch.rand(4, 3, 64, 32))
    torch.testing.assert_close(out.logits, out.feat_bn @ centres.t(), rtol=0, atol=1e-6)


def test_reset_classifier_zero_removes_it_and_its_keys() -> None:
    model = tiny(num_classes=4)
    assert "head.classifier.weight" in model.state_dict()
    assert model.head.classifier.bias is None
    model.reset_classifier(0)
    assert model.num_classes == 0
    assert not any("classifier" in k for k in model.state_dict())
    assert not any("classifier" in k for k in tiny().state_dict())
    assert model.train()(torch.rand(2, 3, 64, 32)).logits is None


def test_reset_classifier_checks_init_shape_and_follows_model_dtype() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"\(3, 96\)"):
        model.reset_classifier(3, torch.zeros(3, 95))
    model.double()
    model.reset_classifier(3)
    assert model.head.classifier.weight.dtype == torch.float64
    w = model.head.classifier.weight.detach()
    assert 0 < w.std().item() < 0.01  # BoT init N(0, 0.001^2)


def test_dropout_only_touches_the_logits() -> None:
    model = tiny(num_classes=3, dropout=0.5).train()
    torch.manual_seed(1)
    out = model(torch.rand(4, 3, 64, 32))
    assert not torch.allclose(out.logits, model.head.classifier(out.feat_bn))


@pytest.mark.parametrize(("key", "value"), [("pooling", "max"), ("dropout", 1.0)])
def test_bad_head_settings_name_the_key(key: str, value) -> None:
    with pytest.raises(ConfigError, match=f"model.{key}"):
        tiny(**{key: value})


def test_pool_feature_retrieves_and_classifies_the_pooled_map() -> None:
    bn = tiny(feature="bn", num_classes=3).eval()
    pool = tiny(feature="pool", num_classes=3).eval()
    x = torch.rand(4, 3, 64, 32)
    with torch.no_grad():
        fmap = pool.forward_map(x)
        pooled = fmap.mean(dim=(2, 3))
        want = torch.nn.functional.normalize(pooled, dim=1)
        torch.testing.assert_close(pool(x), want)
        assert (pool(x) >= 0).all()  # ReLU maps pooled: non-negative, high cosines
        bn.head.neck.running_mean.fill_(0.05)  # a trained neck is no longer the identity
        assert not torch.allclose(bn(x), pool(x))
        pool.train()  # (train-mode BN in the backbone: batch statistics)
        unit = torch.nn.functional.normalize(pool.forward_map(x).mean(dim=(2, 3)), dim=1)
        out = pool(x)
        # the FC reads the unit pooled vector at the BN output's scale sqrt(D)
        torch.testing.assert_close(out.logits, (unit * 96**0.5) @ pool.head.classifier.weight.T)


def test_auto_feature_follows_the_method() -> None:
    from unreid.config import load_config
    from unreid.methods import model_feature

    assert model_feature(load_config([], ["method.name=rsl"])) == "pool"
    assert model_feature(load_config([], ["method.name=pul"])) == "pool"
    assert model_feature(load_config([], ["method.name=sfe_cr"])) == "bn"
    assert model_feature(load_config([], ["method.name=rsl", "model.feature=bn"])) == "bn"
    with pytest.raises(ConfigError, match="model.feature"):
        tiny(feature="pool5")
