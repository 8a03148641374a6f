"""Is the training step spent in the network? Whole pipeline vs a pure network step.

Measures, in one process and on one model:

- ``pipeline``: what :class:`unreid.engine.trainer.Trainer` does per step:
  sampler -> gather uint8 images from the decoded cache -> to the device ->
  batch augmentation -> forward -> cluster-memory loss (+ momentum update) ->
  backward -> Adam step;
- ``network``: forward -> the same InfoNCE loss without the memory update ->
  backward -> Adam step on one fixed, already augmented in-memory batch.

Blocks of the two alternate (so a busy machine slows both alike) and the
median per-step time of each is reported. Goal: pipeline / network <= 1.1.

    python bench/train_bench.py --quick          # tiny: synth:quick, resnet18 at 128x64, 8x4
    python bench/train_bench.py                  # resnet50 at 256x128, 16x16 on synth:default
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _memory import write_json

from unreid.models.precision import autocast

RESULTS = Path(__file__).resolve().parent / "results"


def build_trainer(args: argparse.Namespace, run_dir: Path):
    from unreid.config import load_config
    from unreid.engine.loop import EpochStats
    from unreid.engine.trainer import Trainer

    cfg = load_config(
        [],
        [
            f"data.root={args.data}",
            f"data.height={args.size[0]}",
            f"data.width={args.size[1]}",
            f"model.backbone={args.backbone}",
            "model.pretrained=none",
            "method.name=supervised",  # same head and pipeline as cluster_contrast, no clustering
            f"optim.num_identities={args.p}",
            f"optim.num_instances={args.k}",
            f"optim.iters={10**6}",
            "optim.warmup_epochs=0",
            f"run.out_dir={run_dir}",
            f"run.device={args.device}",
            "run.report=false",
            "run.checkpoint_minutes=0",
        ],
    )
    trainer = Trainer(cfg, run_dir, log_to_disk=False)
    trainer.stats = EpochStats()
    trainer.begin_epoch()  # the label stage of epoch 1: labels, memory, sampler
    return trainer


def time_block(fn, steps: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and input")
    parser.add_argument("--data", default=None, help="dataset root (default synth:quick/default)")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--p", type=int, default=None, help="identities per batch")
    parser.add_argument("--k", type=int, default=None, help="images per identity")
    parser.add_argument("--blocks", type=int, default=None, help="alternating blocks")
    parser.add_argument("--steps", type=int, default=None, help="steps per block")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(RESULTS / "train_bench.json"), help="JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.data = args.data or ("synth:quick" if quick else "synth:default")
    args.backbone = args.backbone or ("resnet18" if quick else "resnet50")
    args.size = args.size or ((128, 64) if quick else (256, 128))
    args.p = args.p or (8 if quick else 16)
    args.k = args.k or (4 if quick else 16)
    args.blocks = args.blocks or (3 if quick else 5)
    args.steps = args.steps or (4 if quick else 10)

    with tempfile.TemporaryDirectory() as tmp:
        t = build_trainer(args, Path(tmp))
        device = t.device
        # The fixed batch of the pure network step: one real augmented batch.
        x, index = t._batch()
        targets = t.method._targets[index]
        memory = t.method.head

        def pipeline() -> None:
            t.run_step()
            t.step += 1

        def network() -> None:
            with autocast(device, t.train_precision):
                out = t.net(x)
                logits = out.feat_norm @ memory.centroids.t().to(out.feat_norm.dtype)
                loss = F.cross_entropy(logits.float() / memory.temperature, targets)
            t.optimizer.zero_grad(set_to_none=True)
            t.scaler.scale(loss).backward()
            t.scaler.step(t.optimizer)
            t.scaler.update()

        time_block(pipeline, 2, device)  # warm-up (allocator, first-call overheads)
        time_block(network, 2, device)
        pipe, net = [], []
        for _ in range(args.blocks):
            pipe += time_block(pipeline, args.steps, device)
            net += time_block(network, args.steps, device)

    p_med, n_med = statistics.median(pipe), statistics.median(net)
    ratio = p_med / n_med
    batch = args.p * args.k
    rows = [
        ("pipeline (sampler+gather+augment+step+memory)", p_med),
        ("network only (fixed batch)", n_med),
    ]
    print(f"train step, {args.backbone} {args.size[0]}x{args.size[1]}, batch {args.p}x{args.k}"
          f" = {batch}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'':48s} {'s/step':>8s} {'img/s':>8s}")
    for name, sec in rows:
        print(f"{name:48s} {sec:8.3f} {batch / sec:8.1f}")
    print(f"{'ratio pipeline / network (goal <= 1.1)':48s} {ratio:8.3f}")
    result = {
        "quick": quick,
        "backbone": args.backbone,
        "size": list(args.size),
        "batch": [args.p, args.k],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps_measured": len(pipe),
        "pipeline_s_per_step": p_med,
        "network_s_per_step": n_med,
        "ratio": ratio,
        "goal": 1.1,
    }
    print(f"wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
