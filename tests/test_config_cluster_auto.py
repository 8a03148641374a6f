"""cluster.auto is on for configs that set no clustering knob; eval.protocol is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from unreid.config import Config, load_config, validate_config
from unreid.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_auto_is_on_when_nothing_is_hand_set() -> None:
    assert load_config([], ["data.root=x"]).cluster.auto is True
    assert Config().cluster.auto is False  # a Config() built in Python keeps the papers'


@pytest.mark.parametrize("knob", ["cluster.k1=10", "cluster.k2=3", "cluster.eps=0.5",
                                  "cluster.min_samples=2", "cluster.auto=false"])
def test_a_hand_set_knob_keeps_auto_off(knob: str) -> None:
    assert load_config([], [knob]).cluster.auto is False


def test_paper_configs_keep_their_values_and_auto_can_be_asked_for(tmp_path) -> None:
    assert load_config([CONFIGS / "market1501.yaml"]).cluster.auto is False
    assert load_config([CONFIGS / "sfe_cr_market1501.yaml"]).cluster.auto is False
    assert load_config([CONFIGS / "market1501.yaml"], ["cluster.auto=true"]).cluster.auto
    own = tmp_path / "own.yaml"
    own.write_text("cluster:\n  eps: 0.5\n  auto: true\n")
    assert load_config([own]).cluster.auto is True


def test_eval_protocol_is_validated_before_any_work() -> None:
    assert load_config([], ["eval.protocol=all-gallery"]).eval.protocol == "all-gallery"
    with pytest.raises(ConfigError, match="eval.protocol='one' is not allowed"):
        load_config([], ["eval.protocol=one"])
    cfg = Config()
    cfg.eval.protocol = "market"
    validate_config(cfg, allow_missing=True)
