"""Bad input and hostile conditions end in one line naming the file and the fix,
never a traceback: text files in another encoding, Ctrl-C, and more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unreid.cli import main
from unreid.data import load_dataset
from unreid.errors import DataError


def _folder(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True)
    for name in names:
        Image.fromarray(np.full((16, 8, 3), 99, np.uint8)).save(root / name)
    return root


def test_a_csv_that_is_not_utf8_is_one_line_naming_the_line(tmp_path, capsys):
    root = _folder(tmp_path / "crops", ["a.jpg", "caf\u00e9.jpg"])
    table = tmp_path / "cams.csv"
    table.write_bytes("path,camid\na.jpg,1\ncaf\u00e9.jpg,2\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_dataset(root, csv=str(table))
    msg = str(err.value)
    assert "\n" not in msg and f"{table} line 3" in msg and "UTF-8" in msg
    assert main(["check-data", str(root), "--csv", str(table), "--no-decode"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # the same table saved as UTF-8 by a spreadsheet (with a byte-order mark) reads
    table.write_bytes("path,camid\na.jpg,1\ncaf\u00e9.jpg,2\n".encode("utf-8-sig"))
    assert load_dataset(root, csv=str(table)).train.camids.tolist() == [0, 1]


def test_ctrl_c_in_train_names_the_resume_command(tiny_world, tmp_path, monkeypatch, capsys):
    from test_engine_train import make_cfg

    from unreid.config import save_config
    from unreid.engine.trainer import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted)
    run = tmp_path / "my run"
    save_config(make_cfg(tiny_world, run), tmp_path / "c.yaml")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 130
    err = capsys.readouterr().err
    assert err == f"interrupted: continue with unreid train --resume '{run}'\n"
    assert main(["train", "--resume", str(run)]) == 130
    assert capsys.readouterr().err == f"interrupted: continue with unreid train --resume '{run}'\n"
