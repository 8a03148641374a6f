"""One camera end to end: train, eval, extract, eval-features, search and report all run
on a Market-layout set whose images all come from one camera (all-gallery protocol)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from unreid.cli import main

SPLITS = ("bounding_box_train", "bounding_box_test", "query")


@pytest.fixture(scope="module")
def one_camera_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic world with every image renamed to camera 1 (``c1``); a sequence
    digit keeps the names unique."""
    from unreid.data.synth import SynthConfig, generate_world

    root = Path(generate_world(
        SynthConfig(ids=16, cameras=2, images_per_id=6, height=64, width=32, occluders=0.0,
                    distractors=4),
        tmp_path_factory.mktemp("one_cam") / "world", progress=False))
    for split in SPLITS:
        for path in (root / split).glob("*.jpg"):
            new = re.sub(r"_c(\d)s(\d)_", lambda m: f"_c1s{m.group(1)}_", path.name)
            path.rename(path.with_name(new))
    return root


def test_one_camera_trains_evaluates_extracts_searches_and_reports(
    one_camera_world: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    cameras = {p.name.split("_")[1][:2] for s in SPLITS for p in (one_camera_world / s).iterdir()}
    assert cameras == {"c1"}
    assert main(["train", "--set", f"data.root={one_camera_world}", "model.backbone=tiny_cnn",
                 "model.pretrained=none", "data.height=64", "data.width=32",
                 f"data.cache_dir={tmp_path / 'cache'}", "optim.epochs=2", "optim.iters=3",
                 "optim.num_identities=2", "optim.num_instances=2", "eval.eval_every=1",
                 "run.device=cpu", "run.checkpoint_minutes=0", f"run.out_dir={run}"]) == 0
    log = (run / "log.txt").read_text()
    assert "all-gallery protocol" in log and "cluster.auto: k1" in log
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval"]["protocol"] for r in records if "eval" in r] == ["all-gallery"] * 3
    assert all("auto" in r["info"] and "health" in r for r in records[1:])
    health = records[-1]["health"]
    assert health["clusters_per_camera"] == [health["num_clusters"]]
    # no cluster can span cameras, and no warning says they should
    assert not any("cameras" in w for r in records for w in r.get("warnings", []))
    capsys.readouterr()

    data = ["--data", str(one_camera_world)]
    assert main(["eval", "--checkpoint", str(run), *data]) == 0
    out = capsys.readouterr().out
    assert "one camera" in out and re.search(r"mAP\s+\d+\.\d", out)
    feats = tmp_path / "f.npz"
    assert main(["extract", "--checkpoint", str(run), *data, "--out", str(feats)]) == 0
    assert main(["eval-features", str(feats)]) == 0
    out = capsys.readouterr().out
    assert "protocol: all-gallery" in out and re.search(r"mAP\s+\d+\.\d", out)
    assert main(["eval", "--checkpoint", str(run), *data, "--protocol", "market"]) == 2
    assert "--protocol all-gallery" in capsys.readouterr().err
    query = next((one_camera_world / "query").iterdir())
    assert main(["search", "--checkpoint", str(run), "--gallery", str(feats),
                 "--query", str(query), "--topk", "3"]) == 0
    assert main(["report", str(run)]) == 0
    html = (run / "report" / "index.html").read_text()
    assert "Label health" in html and "all-gallery" in html
