"""`unreid demo --quick`: the whole newcomer path (world -> train -> report -> table)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    from unreid.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNREID_CACHE", str(tmp_path / "cache"))  # the world is cached there
    assert main(["demo", "--quick", "--out", "runs/demo"]) == 0
    out = capsys.readouterr().out
    assert "mAP" in out and "clusters" in out
    assert "open the report in a browser: runs/demo/report/index.html" in out
    metrics = tmp_path / "runs/demo/metrics.jsonl"
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert (tmp_path / "runs/demo/report/index.html").is_file()
    assert len(list((tmp_path / "cache/synth").glob("*/world.json"))) == 1
    # again: the finished run is resumed, nothing is retrained
    assert main(["demo", "--quick", "--out", "runs/demo"]) == 0
    again = capsys.readouterr().out
    assert "before" in again and "open the report" in again
    assert len(metrics.read_text().splitlines()) == 3
