"""``unreid demo``: the synthetic world -> the default recipe -> a report, in minutes.

What a newcomer runs first. It generates the default synthetic world (cached
under ``synth/`` of the per-user cache after the first run), trains the default
recipe on it with the ground-truth masks, evaluates before and after, writes the HTML
report and prints a short table. Running it again on the same ``--out``
resumes the run (and returns at once when it has finished).

The recipe is a config file shipped with the package,
``unreid/recipes/demo.yaml`` (``demo_quick.yaml`` for ``--quick``): the best
row of the synthetic ablation (``bench/ablation_synth.py``, table in
docs/benchmarks.md) at a budget that fits the demo's 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unreid.config import load_config, recipe_path
from unreid.engine import train
from unreid.engine.checkpoint import CHECKPOINT

__all__ = ["DemoSummary", "demo_config", "run_demo"]

@dataclass(frozen=True)
class DemoSummary:
    """Initial and final retrieval numbers of the demo run (fractions in [0, 1])."""

    run_dir: Path
    report: Path | None
    initial: dict[str, Any]
    final: dict[str, Any]
    num_clusters: int
    num_true_ids: int | None
    ari: float | None
    minutes: float

    def format_table(self) -> str:
        rows = [("", "before", "after")]
        for key in ("mAP", "R1", "mINP"):
            rows.append((key, f"{100 * self.initial[key]:.1f}", f"{100 * self.final[key]:.1f}"))
        lines = [f"{a:8s} {b:>8s} {c:>8s}" for a, b, c in rows]
        truth = f" (true identities: {self.num_true_ids})" if self.num_true_ids else ""
        lines.append(f"clusters {self.num_clusters}{truth}")
        if self.ari is not None:
            lines.append(f"label ARI {self.ari:.3f}")
        lines.append(f"time {self.minutes:.1f} min")
        return "\n".join(lines)


def demo_config(out_dir: str | Path, *, quick: bool = False, overrides: tuple[str, ...] = ()):
    """The demo's :class:`~unreid.config.Config` (recipe file + ``run.out_dir`` + overrides)."""
    recipe = recipe_path("demo_quick" if quick else "demo")
    return load_config([recipe], [f"run.out_dir={out_dir}", *overrides])


def run_demo(out_dir: str | Path = "runs/demo", *, quick: bool = False,
             overrides: tuple[str, ...] = ()) -> DemoSummary:
    """Train the demo recipe in ``out_dir`` (resuming it when it exists), print the table."""
    out = Path(out_dir)
    start = time.perf_counter()
    cfg = demo_config(out, quick=quick, overrides=overrides)
    print(f"unreid demo: {'tiny' if quick else 'default'} synthetic world, method "
          f"{cfg.method.name} ({cfg.model.backbone}, {cfg.optim.epochs} epochs x "
          f"{cfg.optim.iters} steps) -> {out}")
    resuming = (out / CHECKPOINT).is_file()
    result = train(None, resume=out) if resuming else train(cfg)
    evals = result.evals()
    labelled = [r for r in result.records if "num_clusters" in r]
    last = labelled[-1] if labelled else {}
    quality = last.get("label_quality") or {}
    report = out / "report" / "index.html"
    summary = DemoSummary(
        run_dir=out,
        report=report if report.is_file() else None,
        initial=evals[0]["eval"],
        final=evals[-1]["eval"],
        num_clusters=int(last.get("num_clusters", 0)),
        num_true_ids=quality.get("num_true_ids"),
        ari=quality.get("ari"),
        minutes=(time.perf_counter() - start) / 60,
    )
    print(summary.format_table())
    if summary.report is not None:
        print(f"open the report in a browser: {summary.report}")
    return summary
