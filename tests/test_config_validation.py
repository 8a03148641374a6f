"""validate_config: every value checked before any work starts, one line per problem; and the
CLI's one-line errors (exit 2, nothing written) for the first things a user gets wrong."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from unreid.cli import main
from unreid.config import RULES, Config, check_value, load_config, validate_config
from unreid.errors import ConfigError


def root(*overrides: str) -> list[str]:
    return ["data.root=/d", *overrides]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.epochs=0", "optim.epochs=0 is not allowed: use an integer >= 1"),
        ("optim.epochs=-1", "optim.epochs=-1 is not allowed: use an integer >= 1"),
        ("optim.iters=0", "optim.iters=0 is not allowed: use an integer >= 1"),
        ("optim.lr=nan", "optim.lr=nan is not allowed: use a finite number > 0"),
        ("optim.lr=inf", "optim.lr=inf is not allowed: use a finite number > 0"),
        ("optim.lr=0", "optim.lr=0.0 is not allowed: use a finite number > 0"),
        ("optim.lr=-0.001", "optim.lr=-0.001 is not allowed: use a finite number > 0"),
        ("optim.weight_decay=-1", "optim.weight_decay=-1.0 is not allowed: use a finite "
                                  "number >= 0"),
        ("optim.warmup_factor=0", "optim.warmup_factor=0.0 is not allowed: use a finite "
                                  "number in (0, 1]"),
        ("optim.gamma=1.5", "optim.gamma=1.5 is not allowed: use a finite number in (0, 1]"),
        ("optim.step_size=-2", "optim.step_size=-2 is not allowed: use an integer >= 0"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs=-1 is not allowed: use an integer >= 0"),
        ("optim.num_identities=0", "optim.num_identities=0 is not allowed: use an integer >= 1"),
        ("optim.num_instances=0", "optim.num_instances=0 is not allowed: use an integer >= 1"),
        ("eval.batch_size=0", "eval.batch_size=0 is not allowed: use an integer >= 1"),
        ("eval.max_rank=0", "eval.max_rank=0 is not allowed: use an integer >= 1"),
        ("cluster.eps=0", "cluster.eps=0.0 is not allowed: use a finite number in (0, 1]"),
        ("cluster.eps=1.5", "cluster.eps=1.5 is not allowed: use a finite number in (0, 1]"),
        ("cluster.local_eps=-0.1", "cluster.local_eps=-0.1 is not allowed: use a finite "
                                   "number in (0, 1]"),
        ("cluster.lambda_=0", "cluster.lambda_=0.0 is not allowed: use a finite number in "
                              "(0, 1]"),
        ("cluster.lambda_=1.2", "cluster.lambda_=1.2 is not allowed: use a finite number in "
                                "(0, 1]"),
        ("cluster.lambda_step=-0.1", "cluster.lambda_step=-0.1 is not allowed: use a finite "
                                     "number >= 0"),
        ("cluster.min_selected=1.5", "cluster.min_selected=1.5 is not allowed: use a finite "
                                     "number in [0, 1]"),
        ("cluster.delta=0", "cluster.delta=0.0 is not allowed: use a finite number > 0"),
        ("cluster.k1=0", "cluster.k1=0 is not allowed: use an integer >= 1"),
        ("cluster.k2=0", "cluster.k2=0 is not allowed: use an integer >= 1"),
        ("cluster.min_samples=0", "cluster.min_samples=0 is not allowed: use an integer >= 1"),
        ("cluster.local_min_samples=0", "cluster.local_min_samples=0 is not allowed: use an "
                                        "integer >= 1"),
        ("cluster.num_classes=-1", "cluster.num_classes=-1 is not allowed: use an integer >= 0"),
        ("cluster.per_camera_k=-3", "cluster.per_camera_k=-3 is not allowed: use an "
                                    "integer >= 0"),
        ("cluster.soft_temperature=0", "cluster.soft_temperature=0.0 is not allowed: use a "
                                       "finite number > 0"),
        ("method.temperature=-0.05", "method.temperature=-0.05 is not allowed: use a finite "
                                     "number > 0"),
        ("method.momentum=1.5", "method.momentum=1.5 is not allowed: use a finite number in "
                                "[0, 1]"),
        ("method.label_smoothing=1", "method.label_smoothing=1.0 is not allowed: use a finite "
                                     "number in [0, 1)"),
        ("method.soft_weight=-1", "method.soft_weight=-1.0 is not allowed: use a finite "
                                  "number >= 0"),
        ("method.global_features=both", "method.global_features='both' is not allowed: use "
                                        "one of input, foreground, fused"),
        ("method.augment=flip", "method.augment='flip' is not allowed: use one of "
                                "cluster_contrast, rsl, none"),
        ("model.pooling=max", "model.pooling='max' is not allowed: use one of avg, gem"),
        ("model.feature=fc", "model.feature='fc' is not allowed: use one of auto, bn, pool"),
        ("model.last_stride=3", "model.last_stride=3 is not allowed: use one of 1, 2"),
        ("model.dropout=1", "model.dropout=1.0 is not allowed: use a finite number in [0, 1)"),
        ("data.layout=duke", "data.layout='duke' is not allowed: use one of auto, market, "
                             "msmt17, folder"),
        ("data.height=0", "data.height=0 is not allowed: use an integer >= 1"),
        ("data.width=-64", "data.width=-64 is not allowed: use an integer >= 1"),
        ("masks.provider=schp", "masks.provider='schp' is not allowed: use one of none, "
                                "synthetic, png, mediapipe"),
        ("masks.noise=2", "masks.noise=2.0 is not allowed: use a finite number in [0, 1]"),
        ("run.device=gpu", "run.device='gpu' is not allowed: use auto, cpu, cuda or cuda:N"),
        ("run.device=cuda:x", "run.device='cuda:x' is not allowed: use auto, cpu, cuda or "
                              "cuda:N"),
        ("run.checkpoint_steps=-1", "run.checkpoint_steps=-1 is not allowed: use an "
                                    "integer >= 0"),
        ("run.checkpoint_minutes=nan", "run.checkpoint_minutes=nan is not allowed: use a "
                                       "finite number >= 0"),
    ],
)
def test_a_bad_value_is_refused_with_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([], root(override))
    assert str(err.value) == message


@pytest.mark.parametrize(
    "override",
    ["cluster.eps=1.0", "cluster.eps=0.01", "cluster.lambda_=1.0", "cluster.delta=1.5",
     "cluster.min_selected=0", "cluster.num_classes=0", "optim.epochs=1", "optim.iters=1",
     "optim.step_size=0", "optim.lr=10", "optim.gamma=1", "method.momentum=0",
     "method.label_smoothing=0", "model.dropout=0", "run.device=cuda:3", "run.device=cuda",
     "run.device=cpu", "eval.eval_every=0", "eval.eval_every=-1", "data.layout=folder"],
)
def test_values_at_the_edges_of_their_range_are_accepted(override: str) -> None:
    validate_config(load_config([], root(override)))


def test_the_defaults_are_valid_once_data_root_is_set() -> None:
    validate_config(load_config([], root()))
    validate_config(Config(), allow_missing=True)  # a plain dataclass works too


def test_an_unset_data_root_is_refused_only_when_the_config_must_be_complete() -> None:
    cfg = load_config()  # a config a caller still completes: fine
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value).startswith("data.root is not set: name the dataset folder with "
                                      "--set data.root=PATH")


def test_several_problems_are_reported_together_on_one_line() -> None:
    cfg = load_config([], root())
    cfg.optim.epochs = 0
    cfg.cluster.eps = 2.0
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value) == ("cluster.eps=2.0 is not allowed: use a finite number in (0, 1]; "
                              "optim.epochs=0 is not allowed: use an integer >= 1")


def test_a_bad_value_in_a_file_is_refused_when_it_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cluster:\n  eps: 1.5\n")
    with pytest.raises(ConfigError, match=r"^cluster\.eps=1\.5 is not allowed"):
        load_config([path], root())
    # ... unless a later override repairs it: only the merged result is checked
    assert load_config([path], root("cluster.eps=0.5")).cluster.eps == 0.5


def test_every_rule_names_a_real_key() -> None:
    node = OmegaConf.structured(Config)
    for key in RULES:
        section, name = key.split(".")
        # list(...): ``in`` on a DictConfig is False for an unset (MISSING) key like data.root
        assert name in list(node[section]), key


def test_the_choices_are_the_ones_the_owning_modules_accept() -> None:
    from unreid.data.augment import AUGMENT_PRESETS
    from unreid.data.dataset import LAYOUTS
    from unreid.eval.protocol import PROTOCOLS
    from unreid.masks.providers import PROVIDERS
    from unreid.methods.cap import JACCARD_KINDS
    from unreid.methods.sfe_cr import GLOBAL_FEATURES
    from unreid.models.head import FEATURES, build_pooling
    from unreid.models.precision import PRECISIONS

    def allowed(key: str, values) -> set:
        return {v for v in values if RULES[key].check(v)}

    assert allowed("data.layout", [*LAYOUTS, "x"]) == set(LAYOUTS)
    assert allowed("eval.protocol", [*PROTOCOLS, "x"]) == set(PROTOCOLS)
    assert allowed("masks.provider", [*PROVIDERS, "x"]) == set(PROVIDERS)
    assert allowed("run.precision", [*PRECISIONS, "x"]) == set(PRECISIONS)
    assert allowed("method.global_features", [*GLOBAL_FEATURES, "x"]) == set(GLOBAL_FEATURES)
    assert allowed("cluster.jaccard", [*JACCARD_KINDS, "x"]) == set(JACCARD_KINDS)
    assert allowed("method.augment", [*AUGMENT_PRESETS, "x"]) == set(AUGMENT_PRESETS)
    assert allowed("model.feature", ["auto", *FEATURES, "x"]) == {"auto", *FEATURES}
    for name in ("avg", "gem"):
        assert RULES["model.pooling"].check(name)
        build_pooling(name)
    with pytest.raises(ConfigError):
        build_pooling("max")


@pytest.mark.parametrize("value", [True, "3", 2.5, None, math.nan])
def test_an_integer_rule_refuses_what_is_not_an_integer(value) -> None:
    with pytest.raises(ConfigError, match=r"^--batch-size=.* is not allowed: use an integer"):
        check_value("eval.batch_size", value, "--batch-size")


def test_train_validates_a_config_changed_after_loading(tmp_path: Path) -> None:
    from unreid.engine import train

    cfg = load_config([], ["data.root=synth:quick", f"run.out_dir={tmp_path / 'run'}"])
    cfg.optim.iters = 0
    with pytest.raises(ConfigError, match=r"^optim\.iters=0 is not allowed"):
        train(cfg)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the CLI


def cli_error(argv: list[str], capsys) -> str:
    """Run ``unreid ARGV``; it must exit 2 with exactly one ``error:`` line on stderr."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_train_without_config_or_data_root_says_what_to_set_and_writes_nothing(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    line = cli_error(["train"], capsys)
    assert line.startswith("error: data.root is not set: ")
    assert list(tmp_path.iterdir()) == []  # no runs/default/config.yaml left behind


def test_train_with_malformed_yaml_names_the_file_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  root: /d\noptim:\n  lr: [0.1\n")
    line = cli_error(["train", "--config", str(bad)], capsys)
    assert line.startswith(f"error: {bad} line 5: YAML syntax error: ")


@pytest.mark.parametrize(
    ("bad", "key"),
    [("optim.lr=nan", "optim.lr=nan"), ("optim.epochs=0", "optim.epochs=0"),
     ("optim.epochs=-1", "optim.epochs=-1"), ("optim.iters=0", "optim.iters=0"),
     ("cluster.eps=1.5", "cluster.eps=1.5")],
)
def test_train_refuses_a_bad_value_before_anything_is_written(
    tmp_path: Path, capsys, bad: str, key: str
) -> None:
    out = tmp_path / "run"
    line = cli_error(["train", "--set", "data.root=synth:quick", bad, f"run.out_dir={out}"],
                     capsys)
    assert line.startswith(f"error: {key} is not allowed: use ")
    assert not out.exists()


def test_train_with_several_config_files_merges_them(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("data:\n  root: synth:quick\noptim:\n  epochs: 2\n")
    b.write_text("optim:\n  epochs: 0\n")  # the later file wins, and is validated
    line = cli_error(["train", "--config", str(a), str(b)], capsys)
    assert line == "error: optim.epochs=0 is not allowed: use an integer >= 1"


@pytest.mark.parametrize("command", ["eval", "extract", "search"])
def test_a_zero_batch_size_is_refused_before_anything_is_loaded(
    tmp_path: Path, capsys, command: str
) -> None:
    # the checkpoint and data do not exist: the batch size is checked first
    argv = {
        "eval": ["eval", "--data", str(tmp_path)],
        "extract": ["extract", "--data", str(tmp_path), "--out", str(tmp_path / "f.npz")],
        "search": ["search", "--gallery", str(tmp_path), "--query", str(tmp_path)],
    }[command]
    line = cli_error([*argv, "--checkpoint", str(tmp_path / "c.pt"), "--batch-size", "0"],
                     capsys)
    assert line == "error: --batch-size=0 is not allowed: use an integer >= 1"


@pytest.mark.parametrize("command", ["eval", "eval-features"])
def test_an_unknown_protocol_is_refused_before_anything_is_loaded(
    tmp_path: Path, capsys, command: str
) -> None:
    # neither the checkpoint nor the features file exists: the protocol is checked first
    argv = {
        "eval": ["eval", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "c.pt")],
        "eval-features": ["eval-features", str(tmp_path / "f.npz")],
    }[command]
    line = cli_error([*argv, "--protocol", "duke"], capsys)
    assert line == "error: --protocol='duke' is not allowed: use one of auto, market, all-gallery"
