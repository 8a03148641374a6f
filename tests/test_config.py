"""Config files: inheritance (``_base_`` and several files), the shipped configs and the
demo's recipe files, and one-line errors for broken YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from unreid.cli import build_parser
from unreid.config import load_config, recipe_path, to_container, validate_config
from unreid.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNNABLE = sorted(CONFIGS.glob("*.yaml"))  # the files a user passes to --config
BASES = sorted((CONFIGS / "base").glob("*.yaml"))  # complete once a dataset names data.root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- shipped configs


def test_the_shipped_configs_are_found() -> None:
    names = {p.name for p in RUNNABLE}
    assert {"market1501.yaml", "rsl_market1501.yaml", "pul_market1501.yaml",
            "sfe_cr_market1501.yaml", "synth.yaml"} <= names
    assert {p.name for p in BASES} >= {"cluster_contrast.yaml", "sfe_cr.yaml", "rsl.yaml",
                                       "pul.yaml"}


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_every_shipped_config_resolves_and_validates(path: Path) -> None:
    cfg = load_config([path])
    assert validate_config(cfg) is cfg  # complete: data.root included
    assert cfg.run.out_dir != "runs/default"  # each config runs in a folder of its own


@pytest.mark.parametrize("path", BASES, ids=lambda p: p.name)
def test_every_method_base_resolves_without_a_dataset(path: Path) -> None:
    cfg = load_config([path])
    validate_config(cfg, allow_missing=True)
    with pytest.raises(ConfigError, match=r"^data\.root is not set"):
        validate_config(cfg)


def test_the_adaptation_configs_build_the_model_the_source_recipe_trains() -> None:
    # model.pretrained of every *_source config is the source recipe's checkpoint, and
    # the model settings its weights fit (backbone, pooling, last stride, input size)
    source = _flatten(to_container(load_config([CONFIGS / "source" / "peta_reid.yaml"])))
    assert source["method.name"] == "supervised"
    keys = ("model.backbone", "model.pooling", "model.last_stride", "data.height", "data.width")
    adapted = sorted(CONFIGS.glob("*_source.yaml"))
    assert {p.name for p in adapted} >= {"rsl_cuhk03_source.yaml", "pul_cuhk03_source.yaml",
                                         "cluster_contrast_cuhk03_source.yaml",
                                         "cap_cuhk03_source.yaml"}
    for path in adapted:
        flat = _flatten(to_container(load_config([path])))
        assert flat["model.pretrained"] == f"{source['run.out_dir']}/checkpoint.pt", path.name
        assert {k: flat[k] for k in keys} == {k: source[k] for k in keys}, path.name


def test_the_all_parts_camera_config_is_cap_with_the_three_switches() -> None:
    cap = _flatten(to_container(load_config([CONFIGS / "cap_cuhk03_source.yaml"])))
    every = _flatten(to_container(load_config([CONFIGS / "cap_all_cuhk03_source.yaml"])))
    assert {k: every[k] for k in every if every[k] != cap[k]} == {
        "cluster.jaccard": "camera_aware", "camera.associate": True,
        "camera.standardize": True, "run.out_dir": "runs/cuhk03-cap_all-source"}


# The values the configs resolved to before they inherited from configs/base/ (the keys that
# decide what is trained; the whole resolved dicts were compared when restructuring).
FORMER = {
    "market1501.yaml": {
        "data.root": "data/Market-1501-v15.09.15", "data.layout": "market",
        "data.height": 256, "data.width": 128, "model.pooling": "gem", "model.last_stride": 1,
        "method.name": "cluster_contrast", "method.momentum": 0.1, "method.temperature": 0.05,
        "cluster.eps": 0.6, "cluster.k1": 30, "cluster.k2": 6, "cluster.min_samples": 4,
        "optim.lr": 3.5e-4, "optim.warmup_epochs": 0, "optim.step_size": 20,
        "optim.epochs": 50, "optim.iters": 200, "optim.num_identities": 16,
        "optim.num_instances": 16, "eval.eval_every": 10,
        "run.out_dir": "runs/market1501-cluster_contrast",
    },
    "msmt17.yaml": {
        "data.layout": "msmt17", "method.name": "cluster_contrast", "cluster.eps": 0.6,
        "optim.iters": 400, "optim.num_instances": 16,
    },
    "sfe_cr_market1501.yaml": {
        "method.name": "sfe_cr", "masks.provider": "png", "masks.mask_dir": "data/market-schp",
        "cluster.eps": 0.5, "cluster.local_eps": 0.5, "cluster.local_min_samples": 2,
        "cluster.delta": 0.85, "method.global_features": "input", "method.momentum": 0.1,
        "optim.num_identities": 8, "optim.num_instances": 4, "optim.epochs": 50,
        "model.pooling": "gem", "run.out_dir": "runs/market1501-sfe_cr",
    },
    "rsl_dukemtmc.yaml": {
        "data.root": "data/DukeMTMC-reID", "data.layout": "market", "data.height": 224,
        "data.width": 224, "model.last_stride": 2, "model.pooling": "avg", "model.dropout": 0.5,
        "method.name": "rsl", "method.augment": "rsl", "cluster.num_classes": 700,
        "cluster.lambda_": 0.85, "cluster.lambda_step": 0.005, "cluster.soft_temperature": 0.02,
        "optim.lr": 3.5e-4, "optim.step_size": 100, "optim.epochs": 25, "optim.iters": 1000,
        "optim.num_identities": 4, "optim.num_instances": 4, "eval.eval_every": 5,
    },
    "pul_market1501.yaml": {
        "method.name": "pul", "cluster.num_classes": 750, "cluster.lambda_": 0.85,
        "cluster.lambda_step": 0.0, "model.dropout": 0.5, "data.height": 224,
        "optim.epochs": 25, "optim.iters": 800, "run.out_dir": "runs/market1501-pul",
    },
}


@pytest.mark.parametrize("name", sorted(FORMER))
def test_shipped_configs_keep_their_former_values(name: str) -> None:
    flat = _flatten(to_container(load_config([CONFIGS / name])))
    assert {k: flat[k] for k in FORMER[name]} == FORMER[name]


def test_a_dataset_config_is_short() -> None:
    # the point of the bases: a dataset file names only what differs from its method
    for path in RUNNABLE:
        keys = [ln for ln in path.read_text().splitlines()
                if ln.startswith("  ") and not ln.lstrip().startswith("#")]
        assert len(keys) <= 20, path.name


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------- the demo's recipes


# What the demo ran before its recipe became a file: its former override lists.
FORMER_DEMO = [
    "data.root=synth:default", "data.height=128", "data.width=64",
    "model.backbone=tf_efficientnet_lite0", "model.pretrained=imagenet", "method.name=sfe_cr",
    "method.global_features=fused", "masks.provider=synthetic", "cluster.eps=0.4",
    "optim.epochs=6", "optim.iters=60", "optim.warmup_epochs=0", "optim.step_size=5",
    "optim.num_identities=8", "optim.num_instances=4", "eval.eval_every=2",
    "run.checkpoint_minutes=2",
]
FORMER_QUICK = [
    "data.root=synth:quick", "data.height=64", "data.width=32", "model.backbone=tiny_cnn",
    "model.pretrained=none", "method.name=sfe_cr", "method.global_features=foreground",
    "masks.provider=synthetic", "cluster.k1=10", "cluster.k2=3", "optim.epochs=2",
    "optim.iters=6", "optim.warmup_epochs=0", "optim.num_identities=4",
    "optim.num_instances=4", "eval.eval_every=1", "run.checkpoint_minutes=0",
]


@pytest.mark.parametrize(("quick", "former"), [(False, FORMER_DEMO), (True, FORMER_QUICK)])
def test_demo_config_is_what_the_former_recipe_resolved_to(quick: bool, former: list) -> None:
    from unreid.apps.demo import demo_config

    now = to_container(demo_config("runs/x", quick=quick, overrides=("run.seed=3",)))
    before = to_container(load_config([], [*former, "run.out_dir=runs/x", "run.seed=3"]))
    assert now == before
    assert validate_config(demo_config("runs/x", quick=quick)) is not None


def test_recipe_path_names_the_known_recipes_when_asked_for_another() -> None:
    assert recipe_path("demo").name == "demo.yaml"
    with pytest.raises(ConfigError, match=r"no recipe 'nope' .*: use one of demo, demo_quick"):
        recipe_path("nope")


# ---------------------------------------------------------------- inheritance


def test_base_keys_come_first_and_the_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "cluster:\n  eps: 0.5\noptim:\n  epochs: 3\n  iters: 7\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\noptim:\n  epochs: 5\n")
    cfg = load_config([child])
    assert (cfg.cluster.eps, cfg.optim.epochs, cfg.optim.iters) == (0.5, 5, 7)


def test_a_list_of_bases_merges_in_order(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "optim:\n  epochs: 3\n  iters: 7\n")
    write(tmp_path / "b.yaml", "optim:\n  epochs: 4\n")
    child = write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\ncluster:\n  k1: 9\n")
    cfg = load_config([child])
    assert (cfg.optim.epochs, cfg.optim.iters, cfg.cluster.k1) == (4, 7, 9)


def test_bases_are_relative_to_the_file_that_names_them(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path / "conf/base/root.yaml", "optim:\n  iters: 11\n")
    write(tmp_path / "conf/base/mid.yaml", "_base_: root.yaml\noptim:\n  epochs: 2\n")
    child = write(tmp_path / "conf/sets/leaf.yaml", "_base_: ../base/mid.yaml\n")
    monkeypatch.chdir(tmp_path / "conf/base")  # the current folder plays no part
    cfg = load_config([child])
    assert (cfg.optim.iters, cfg.optim.epochs) == (11, 2)


def test_several_files_merge_left_to_right_after_their_bases(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "cluster:\n  eps: 0.5\n  k1: 20\n")
    a = write(tmp_path / "a.yaml", "_base_: base.yaml\ncluster:\n  eps: 0.7\n")
    b = write(tmp_path / "b.yaml", "cluster:\n  k1: 12\n")
    assert (load_config([a, b]).cluster.eps, load_config([a, b]).cluster.k1) == (0.7, 12)
    # a later file's base is merged where that file is: it overrides earlier files
    c = write(tmp_path / "c.yaml", "_base_: base.yaml\n")
    assert load_config([a, c]).cluster.eps == 0.5
    assert load_config([a, c], ["cluster.eps=0.9"]).cluster.eps == 0.9  # overrides last


@pytest.mark.parametrize("argv", [["--config", "a.yaml", "b.yaml"],
                                  ["--config", "a.yaml", "--config", "b.yaml"]])
def test_cli_takes_several_config_files_in_order(argv: list[str]) -> None:
    args = build_parser().parse_args(["train", *argv, "--set", "optim.epochs=2"])
    assert args.config == ["a.yaml", "b.yaml"]
    assert args.set == ["optim.epochs=2"]


def test_a_base_cycle_is_refused_with_one_line(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: [c.yaml]\n")
    write(tmp_path / "c.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config([a])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("_base_ cycle: ")
    assert message.count("a.yaml") == 2 and "b.yaml" in message and "c.yaml" in message
    selfish = write(tmp_path / "self.yaml", "_base_: ./self.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config([selfish])


def test_a_base_named_twice_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "common.yaml", "optim:\n  iters: 9\n")
    write(tmp_path / "x.yaml", "_base_: common.yaml\n")
    child = write(tmp_path / "y.yaml", "_base_: [common.yaml, x.yaml]\n")
    assert load_config([child]).optim.iters == 9


def test_a_missing_base_names_the_file_that_asked_for_it(tmp_path: Path) -> None:
    child = write(tmp_path / "child.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope\.yaml not found \(named in .*child\.yaml"):
        load_config([child])


@pytest.mark.parametrize("value", ["3", "{a: 1}", "[a.yaml, 2]"])
def test_a_base_must_name_files(tmp_path: Path, value: str) -> None:
    child = write(tmp_path / "child.yaml", f"_base_: {value}\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: _base_ must be a file name"):
        load_config([child])


def test_a_typo_in_a_base_names_the_base(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "optim:\n  epoch: 3\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: Key 'epoch' not in 'OptimConfig'"):
        load_config([child])


# ---------------------------------------------------------------- unreadable files


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("optim:\n  lr: [1\n", 3, "did not find expected ',' or ']' (while parsing a flow "
                                  "sequence from line 2)"),
        ("optim:\n  lr: 1\n  lr: 2\n", 3, "found duplicate key lr"),
        ("optim:\n\tlr: 1\n", 2, "found character that cannot start any token"),
        ("optim:\n  lr: 1\n   epochs: 2\n", 3, "mapping values are not allowed"),
    ],
    ids=["unclosed-list", "duplicate-key", "tab", "indent"],
)
def test_malformed_yaml_is_one_line_with_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config([path])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path} line {line}: YAML syntax error: ")
    assert problem in message


def test_a_config_that_is_not_a_mapping_or_not_utf8_is_refused(tmp_path: Path) -> None:
    listing = write(tmp_path / "list.yaml", "- optim\n- data\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: a config is a mapping of sections"):
        load_config([listing])
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("run:\n  out_dir: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.yaml is not UTF-8 text"):
        load_config([latin])
    empty = write(tmp_path / "empty.yaml", "# nothing yet\n")
    assert to_container(load_config([empty])) == to_container(load_config([]))


def test_a_stored_config_of_an_older_version_still_loads() -> None:
    from unreid.config import config_from_dict, to_container

    stored = to_container(load_config([], ["data.root=/d", "run.precision=fp32"]))
    stored["run"]["amp"] = True  # what unreid 0.1 checkpoints hold
    cfg = config_from_dict(stored)
    assert cfg.run.precision == "fp32" and "amp" not in cfg.run
    assert stored["run"]["amp"] is True  # the caller's dict is not changed
    stored["run"]["no_such_key"] = 1
    with pytest.raises(ConfigError, match="stored config does not fit this unreid version"):
        config_from_dict(stored)
