"""``unreid check-data``: what a dataset folder holds, and whether every image decodes.

:func:`check_data` reads the layout, counts images, identities and cameras per
split, and (unless told not to) decodes every image with a progress bar,
collecting the unreadable ones instead of stopping at the first.
:func:`format_report` turns the result into the table the CLI prints.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from unreid.data.dataset import Dataset, iter_paths, load_dataset
from unreid.data.images import PLAIN_MODES, decode_image
from unreid.errors import DataError
from unreid.progress import progress_bar

__all__ = ["DataReport", "check_data", "format_report"]


@dataclass(frozen=True)
class DataReport:
    """What :func:`check_data` found.

    Attributes:
        unreadable: (path, one-line reason) of every image that failed to decode.
        decoded: number of images decoded (0 with ``decode=False``).
        converted: (Pillow mode, count) of the decoded images that were not 8-bit
            RGB or grey on disk (16-bit, palette, alpha, CMYK, ...), by mode.
    """

    dataset: Dataset
    decoded: int = 0
    unreadable: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    converted: tuple[tuple[str, int], ...] = field(default_factory=tuple)


def _try_decode(path: str) -> tuple[str | None, str | None]:
    """(the file's mode when decoding converts it, else None; the error line or None)."""
    try:
        decode_image(path)
        with Image.open(path) as img:  # the header only: decoding succeeded above
            mode = img.mode
    except (DataError, OSError) as exc:
        return None, str(exc)
    return (None if mode in PLAIN_MODES else mode), None


def check_data(
    root: str | Path,
    *,
    layout: str = "auto",
    camera_regex: str | None = None,
    csv: str | None = None,
    decode: bool = True,
    progress: bool = True,
) -> DataReport:
    """Load the dataset at ``root`` and decode every image (see the module docstring)."""
    dataset = load_dataset(root, layout=layout, camera_regex=camera_regex, csv=csv)
    if not decode:
        return DataReport(dataset)
    paths = list(iter_paths(dataset))
    bad: list[tuple[str, str]] = []
    modes: Counter[str] = Counter()
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress_bar(total=len(paths), desc="decode", unit="img", enabled=progress) as bar:
        for path, (mode, reason) in zip(paths, pool.map(_try_decode, paths, chunksize=32)):
            if reason is not None:
                bad.append((path, reason))
            if mode is not None:
                modes[mode] += 1
            bar.update(1)
    return DataReport(dataset, decoded=len(paths), unreadable=tuple(bad),
                      converted=tuple(sorted(modes.items())))


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells,
                                                                                  widths)))


def format_report(report: DataReport, *, max_unreadable: int = 20) -> str:
    """The check-data table: per split images / identities / cameras, images per
    camera, warnings, and the unreadable images."""
    ds = report.dataset
    lines = [f"dataset {ds.root} (layout {ds.layout})"]
    header = ["split", "images", "identities", "cameras"]
    distractors = ds.distractor_pid is not None
    if distractors:
        header.append("distractors")
    rows = [header]
    for s in ds.splits:
        row = [s.name, str(len(s)), str(len(s.identities(ds.distractor_pid)))
               if (s.pids >= 0).any() else "unknown", str(len(s.images_per_camera()))]
        if distractors:
            row.append(str(int((s.pids == ds.distractor_pid).sum())))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += [_row(r, widths) for r in rows]
    cams = sorted({c for s in ds.splits for c in s.images_per_camera()})
    if cams:
        lines.append("")
        cam_header = ["images per camera", *[f"c{c}" for c in cams]]
        cam_rows = [cam_header] + [
            [s.name, *[str(s.images_per_camera().get(c, 0)) for c in cams]]
            for s in ds.splits if len(s)
        ]
        w = [max(len(r[i]) for r in cam_rows) for i in range(len(cam_header))]
        lines += [_row(r, w) for r in cam_rows]
    if not ds.has_cameras:
        lines.append("note: no camera labels: every image is camera 0 (pass --camera-regex "
                     "with (?P<camid>...) or --csv path,camid to give cameras)")
    lines += [f"warning: {w}" for w in ds.warnings]
    if report.decoded:
        lines.append("")
        lines.append(f"decoded {report.decoded} images: {len(report.unreadable)} unreadable")
        if report.converted:
            by_mode = ", ".join(f"{m}: {n}" for m, n in report.converted)
            lines.append(
                f"note: {sum(n for _, n in report.converted)} images converted to 8-bit RGB "
                f"({by_mode}; 16-bit and float scaled, transparency shown on white)")
        for _, reason in report.unreadable[:max_unreadable]:
            lines.append(f"  {reason}")
        if len(report.unreadable) > max_unreadable:
            lines.append(f"  ... and {len(report.unreadable) - max_unreadable} more")
    return "\n".join(lines)
