"""Images per second: the decoded cache vs decoding JPEGs, in one run.

Rows, on the same images at the same working size:

- ``pil``: the reference a plain dataloader pays every epoch: PIL open ->
  convert RGB -> resize (bilinear), one image at a time, one thread;
- ``cache build``: :func:`unreid.data.load_images` filling the cache the first
  time (JPEG draft decoding + a thread pool);
- ``cache read``: what every later epoch pays: random training batches
  (64 images) gathered from the memory-mapped cache.

    python bench/data_bench.py                      # CUHK03 train split if present, else synth
    python bench/data_bench.py --data DIR --size 256 128 --limit 4000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
CUHK03 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03-detected"


def pil_reference(paths: list[str], height: int, width: int) -> np.ndarray:
    out = np.empty((len(paths), 3, height, width), np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as img:
            out[i] = np.asarray(img.convert("RGB").resize((width, height), Image.BILINEAR)
                                ).transpose(2, 0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset folder (default: CUHK03 or synth)")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--limit", type=int, default=4000, help="images used (train split)")
    parser.add_argument("--batches", type=int, default=200, help="cache-read batches of 64")
    parser.add_argument("--out", default=str(RESULTS / "data_bench.json"))
    args = parser.parse_args(argv)

    from unreid.data import load_dataset, load_images

    root = Path(args.data) if args.data else CUHK03
    if not root.is_dir():
        from unreid.data.synth import default_world

        root = default_world()
    paths = list(load_dataset(root).train.paths)[: args.limit]
    h, w = args.size
    n = len(paths)
    rows = []

    t = time.perf_counter()
    ref = pil_reference(paths, h, w)
    rows.append(("pil (reference)", n, time.perf_counter() - t))

    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        cached = load_images(paths, h, w, cache_dir=cache, progress=False)
        rows.append(("cache build", n, time.perf_counter() - t))
        # draft decoding may pick a smaller JPEG scale first: close to, not equal to, PIL
        diff = float(np.abs(cached.astype(np.int16) - ref.astype(np.int16)).mean())
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        total = 0
        for _ in range(args.batches):
            index = np.sort(rng.choice(n, size=min(64, n), replace=False))
            batch = np.ascontiguousarray(cached[index])
            total += len(batch)
        rows.append(("cache read (batches of 64)", total, time.perf_counter() - t))
        cache_mb = sum(f.stat().st_size for f in Path(cache).glob("*.npy")) / 2**20

    ref_rate = rows[0][1] / rows[0][2]
    print(f"data bench: {n} images of {root} at {h}x{w}; cache {cache_mb:.0f} MiB; "
          f"mean |cache - PIL| = {diff:.2f} grey levels")
    print(f"{'path':28s} {'images':>8s} {'seconds':>8s} {'img/s':>10s} {'x PIL':>7s}")
    for name, count, sec in rows:
        rate = count / sec
        print(f"{name:28s} {count:8d} {sec:8.2f} {rate:10.0f} {rate / ref_rate:7.1f}")
    result = {
        "data": str(root), "images": n, "size": [h, w], "cache_mib": cache_mb,
        "mean_abs_diff_vs_pil": diff,
        "rows": [{"path": name, "images": c, "seconds": s, "images_per_s": c / s,
                  "speedup_vs_pil": c / s / ref_rate} for name, c, s in rows],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
