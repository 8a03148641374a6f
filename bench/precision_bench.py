"""Training step and feature extraction per numeric path: what ``run.precision=auto`` and
channels-last buy on this processor, against the previous CPU default in the same run.

Paths (one model's weights, copied into each layout):

- ``fp32 contiguous``: what unreid ran on a CPU before channels-last and bf16;
- ``fp32 channels-last``;
- ``bf16 channels-last``: autocast to bfloat16 (native on AVX-512 BF16 / AMX CPUs);
- ``auto``: what a run picks here (training and extraction decided separately).

A training step is forward -> InfoNCE against fixed centroids -> backward -> Adam on one
fixed batch; extraction is :func:`unreid.models.extract_features` over uint8 images.
Blocks of the paths alternate so a busy machine slows each alike; the median counts.

    python bench/precision_bench.py                         # lite0 128x64 and resnet50 256x128
    python bench/precision_bench.py --models tf_efficientnet_lite0:128x64 --blocks 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _memory import write_json

from unreid.config import ModelConfig
from unreid.models import build_model, extract_features
from unreid.models.precision import (
    Precision,
    autocast,
    cpu_bf16_native,
    extraction_precision,
    resolve_precision,
)

RESULTS = Path(__file__).resolve().parent / "results" / "precision_bench.json"
PATHS = {  # name -> (channels_last, train precision, extraction precision)
    "fp32 contiguous": (False, "fp32", "fp32"),
    "fp32 channels-last": (True, "fp32", "fp32"),
    "bf16 channels-last": (True, "bf16", "bf16"),
}


def processor() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def time_calls(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_model(backbone: str, size: tuple[int, int], args: argparse.Namespace) -> list[dict]:
    h, w = size
    device = torch.device("cpu")
    torch.manual_seed(0)
    reference = build_model(ModelConfig(backbone=backbone, pretrained="none",
                                        channels_last=False), 0, feature="bn")
    gen = torch.Generator().manual_seed(0)
    batch = torch.rand(args.train_batch, 3, h, w, generator=gen)
    centroids = F.normalize(torch.randn(64, reference.feature_dim, generator=gen), dim=1)
    targets = torch.randint(0, 64, (args.train_batch,), generator=gen)
    images = np.random.default_rng(0).integers(0, 256, (args.extract_images, 3, h, w),
                                                dtype=np.uint8)
    auto_train = resolve_precision("auto", device, "train")
    paths = dict(PATHS)
    auto_extract = extraction_precision("auto", reference, device, torch.from_numpy(images[:64]))
    paths["auto"] = (True, auto_train.name, auto_extract.name)

    base_feats = extract_features(reference, images, batch_size=args.extract_batch,
                                  progress=False)
    runs, cosine = {}, {}
    for name, (cl, train_p, extract_p) in paths.items():
        model = build_model(ModelConfig(backbone=backbone, pretrained="none", channels_last=cl),
                            0, feature="bn")
        model.load_state_dict(reference.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)
        x = batch.contiguous(memory_format=torch.channels_last) if cl else batch

        def step(model=model, opt=opt, x=x, p=train_p) -> None:
            model.train()
            with autocast(device, Precision(p)):
                out = model(x)
                logits = out.feat_norm.float() @ centroids.t()
            loss = F.cross_entropy(logits / 0.05, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def extract(model=model, p=extract_p) -> torch.Tensor:
            return extract_features(model, images, batch_size=args.extract_batch,
                                    progress=False, precision=Precision(p))

        runs[name] = (step, extract)
        # Parity before any step changes the weights; also the warm-up (allocator, oneDNN
        # primitive creation) of both phases.
        cosine[name] = float((extract() * base_feats).sum(1).min())
        step()
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in runs}
    for _ in range(args.blocks):
        for name, (step, extract) in runs.items():
            times[name][0].extend(time_calls(step, args.steps))
            times[name][1].extend(time_calls(extract, 1))
    rows = []
    base_step = statistics.median(times["fp32 contiguous"][0])
    base_ext = statistics.median(times["fp32 contiguous"][1])
    for name, (step_t, ext_t) in times.items():
        cl, train_p, extract_p = paths[name]
        s, e = statistics.median(step_t), statistics.median(ext_t)
        rows.append({
            "model": f"{backbone} {h}x{w}", "path": name, "channels_last": cl,
            "train_precision": train_p, "extract_precision": extract_p,
            "train_ms_per_step": 1000 * s, "train_img_s": args.train_batch / s,
            "train_speedup": base_step / s,
            "extract_img_s": args.extract_images / e, "extract_speedup": base_ext / e,
            "min_cosine_to_fp32": cosine[name],
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["tf_efficientnet_lite0:128x64", "resnet50:256x128"],
                        help="BACKBONE:HxW entries")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--extract-batch", type=int, default=256)
    parser.add_argument("--extract-images", type=int, default=512)
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks")
    parser.add_argument("--steps", type=int, default=3, help="training steps per block")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args(argv)

    rows = []
    for entry in args.models:
        backbone, _, size = entry.partition(":")
        h, w = (int(v) for v in (size or "128x64").split("x"))
        rows += bench_model(backbone, (h, w), args)
    cpu = processor()
    print(f"{cpu}; native bf16: {cpu_bf16_native()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; train batch {args.train_batch}, "
          f"extraction batch {args.extract_batch}")
    print(f"{'model':28s} {'path':20s} {'train ms':>9s} {'img/s':>7s} {'x':>5s} "
          f"{'extract img/s':>13s} {'x':>5s} {'min cos':>8s}")
    for r in rows:
        path = r["path"] if r["path"] != "auto" else (
            f"auto ({r['train_precision']}/{r['extract_precision']})")
        print(f"{r['model']:28s} {path:20s} {r['train_ms_per_step']:9.0f} "
              f"{r['train_img_s']:7.1f} {r['train_speedup']:5.2f} {r['extract_img_s']:13.1f} "
              f"{r['extract_speedup']:5.2f} {r['min_cosine_to_fp32']:8.5f}")
    payload = {"processor": cpu, "bf16_native": cpu_bf16_native(),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    print(f"wrote {write_json(args.out, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
