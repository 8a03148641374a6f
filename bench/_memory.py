"""Peak-memory and result-file helpers shared by the benches (Linux /proc, glibc).

A measured call's extra memory is VmHWM after ``clear_refs`` minus the resident size
before it; ``release_free_heap`` first returns freed heap pages to the OS so that the
call cannot hide its allocations in memory the data generation freed but left resident.
"""

from __future__ import annotations

import json
import re
import resource
import sys
from pathlib import Path

from unreid.io import atomic_write_text

__all__ = [
    "finish", "peak_kb", "release_free_heap", "reset_peak", "status_kb", "write_json",
]


def status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> bool:
    """Reset VmHWM to the current resident size; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_kb(reset_ok: bool) -> int:
    """Peak resident kB since :func:`reset_peak` (or since start, if it failed)."""
    if reset_ok:
        hwm = status_kb("VmHWM")
        if hwm is not None:
            return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON atomically (:func:`unreid.io.atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def finish(path: str | Path, payload: dict, rows: list[dict]) -> int:
    """Write the results and return the exit status: 1 when a row's answer differed from
    the dense reference (``dense_equal`` False), else 0."""
    print(f"wrote {write_json(path, payload)}")
    failed = [r["size"] for r in rows if r.get("dense_equal") is False]
    if failed:
        print(f"MISMATCH with the dense reference: {failed}", file=sys.stderr)
        return 1
    return 0
