"""The command line itself: what ``unreid --help`` costs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import unreid

SRC = str(Path(unreid.__file__).resolve().parents[1])


def test_help_does_not_import_torch() -> None:
    # torch takes seconds to import; the parser and --help must not wait for it
    code = (
        "import sys\n"
        "from unreid.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'omegaconf') if m in sys.modules]\n"
        "print('imported:', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert "usage: unreid" in out
    assert out.strip().endswith("imported: []")
