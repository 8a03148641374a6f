"""Look at a report as a person would: headless Chromium renders the page to a PNG.

Optional: needs a Chromium binary (Debian: ``apt-get install chromium``). The
flags keep it off the network (this machine has none, and the report needs none:
every link is relative) and out of the user's profile.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from unreid.errors import UnreidError

__all__ = ["find_chromium", "render_html"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--allow-file-access-from-files",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or None."""
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def render_html(html_path: str | Path, png_path: str | Path, *, width: int = 1280,
                height: int = 4000, timeout: float = 120.0) -> Path:
    """Screenshot ``html_path`` (a local file) into ``png_path`` at ``width`` x ``height``.

    Raises:
        UnreidError: no Chromium on PATH, or it failed (its last stderr line is shown).
    """
    binary = find_chromium()
    if binary is None:
        raise UnreidError("no Chromium found on PATH to render the report: install it "
                          "(Debian: apt-get install chromium) or open the HTML file yourself")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unreid-chromium-") as profile:
        cmd = [binary, *_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png_path}", html_path.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not png_path.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UnreidError(f"Chromium could not render {html_path} ({last[:200]})")
    return png_path
