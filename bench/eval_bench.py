"""Evaluator benchmark: whole evaluation vs the bare distance GEMM, peak extra memory, and
exactness against a dense argsort reference.

    python bench/eval_bench.py                 # Market and MSMT17 sizes (below)
    python bench/eval_bench.py --quick         # small sizes, a smoke run
    python bench/eval_bench.py --sizes market  # or msmt, or QxGxD, comma-separated

Market-1501: 3,368 queries x 15,913 gallery; MSMT17: 11,659 x 82,161; D = 2048.

Each size runs in its own subprocess so that memory readings do not mix. Features are
random float32, L2-normalised, with planted identities (feature = identity centre +
noise, noise chosen so that AP is far from 0 and 1), written row block by row block so
that generating them leaves no large temporary behind.

Timing: the bare GEMM pass is `_distance_chunks` over every query (the same chunking and
post-processing the evaluation uses, results discarded); the evaluation is
`evaluate_features`. The two are run alternately, `--repeats` times each, and the best
time of each is kept (the machine is shared, so the minimum is the least noisy).

Peak extra memory: torch allocations are invisible to tracemalloc, so the worker resets
the kernel's resident-set high-water mark (`echo 5 > /proc/self/clear_refs`) after
generating the data and reads VmHWM from /proc/self/status after one evaluation; extra =
VmHWM - resident size before the evaluation (taken after glibc malloc_trim, so that
freed-but-resident heap pages cannot absorb the evaluation's allocations). Where
clear_refs is unavailable it falls back to `resource.getrusage(RUSAGE_SELF).ru_maxrss`
minus the resident size before, an upper bound. psutil is not used (not installed here).

Dense reference (sizes with Q x G <= 60M, i.e. Market): full stable `torch.sort` of every
distance row, then AP / CMC / mINP by cumulative sums over the sorted rows; the metrics
must equal the fast path's to 1e-9.

Writes bench/results/eval_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _memory import finish, peak_kb, release_free_heap, reset_peak, status_kb

SIZES = {
    "market": (3368, 15913, 2048, 751, 6),
    "msmt": (11659, 82161, 2048, 3060, 15),
}
QUICK_SIZES = {
    "quick-market": (400, 3000, 2048, 150, 6),
    "quick-msmt": (600, 12000, 2048, 450, 15),
}
DENSE_LIMIT = 60_000_000  # Q x G entries for the dense reference (Market: 53.6M)
RESULTS = Path(__file__).resolve().parent / "results" / "eval_bench.json"










def make_world(
    num_q: int,
    num_g: int,
    dim: int,
    num_ids: int,
    num_cams: int,
    *,
    noise: float = 4.0,
    seed: int = 0,
):
    """Random L2-normalised float32 features with planted identities (see module doc).

    Feature = unit identity centre + Gaussian noise of norm ~``noise``: same-identity
    cosine ~1 / (1 + noise^2) against a negative spread of ~1/sqrt(D), so positives are
    spread over the ranking and AP lies well inside (0, 1). Identity 0 is a pool of
    gallery-only distractors (10 %) with no shared centre, as in Market-1501.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_ids, dim, generator=gen), dim=1)
    g_pids = torch.randint(1, num_ids, (num_g,), generator=gen)
    g_pids[torch.rand(num_g, generator=gen) < 0.1] = 0
    q_pids = torch.randint(1, num_ids, (num_q,), generator=gen)
    g_cams = torch.randint(0, num_cams, (num_g,), generator=gen)
    q_cams = torch.randint(0, num_cams, (num_q,), generator=gen)
    sigma = noise / dim**0.5

    def fill(pids: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(pids), dim)
        for s in range(0, len(pids), 4096):
            p = pids[s : s + 4096]
            block = centres[p] + sigma * torch.randn(len(p), dim, generator=gen)
            block[p == 0] = torch.randn(int((p == 0).sum()), dim, generator=gen)
            out[s : s + 4096] = torch.nn.functional.normalize(block, dim=1)
        return out

    return fill(q_pids), fill(g_pids), q_pids, g_pids, q_cams, g_cams


def dense_reference(q, g, q_pids, g_pids, q_cams, g_cams, chunk: int, max_rank: int = 50):
    """Textbook metrics from a full stable sort of every row (chunks of rows)."""
    import torch

    from unreid.eval.metrics import _distance_chunks

    aps, inps, firsts = [], [], []
    for idx, dist in _distance_chunks(q, g, torch.arange(len(q)), chunk):
        order = torch.sort(dist, dim=1, stable=True).indices
        gp, gc = g_pids[order], g_cams[order]
        match = gp == q_pids[idx, None]
        ignored = (gp == -1) | (match & (gc == q_cams[idx, None]))
        kept_rank = torch.cumsum(~ignored, dim=1)  # rank among valid items
        pos = match & ~ignored
        n = pos.sum(1)
        ok = n > 0
        m = torch.cumsum(pos, dim=1)  # m-th positive
        prec = torch.where(pos, m.double() / kept_rank.clamp_min(1), 0.0)
        aps.append((prec.sum(1) / n.clamp_min(1))[ok])
        big = torch.iinfo(torch.int64).max
        firsts.append(torch.where(pos, kept_rank, big).amin(1)[ok])
        last = torch.where(pos, kept_rank, 0).amax(1)
        inps.append((n.double() / last.clamp_min(1))[ok])
    ap, inp, first = torch.cat(aps), torch.cat(inps), torch.cat(firsts)
    cmc = [(first <= k).double().mean().item() for k in range(1, max_rank + 1)]
    return {"mAP": ap.mean().item(), "mINP": inp.mean().item(), "cmc": cmc, "num_valid": len(ap)}


def worker(name: str, spec: tuple, repeats: int, chunk: int) -> dict:
    import torch

    from unreid.eval import evaluate_features
    from unreid.eval.metrics import _distance_chunks

    num_q, num_g, dim, num_ids, num_cams = spec
    t0 = time.perf_counter()
    q, g, qp, gp, qc, gc = make_world(num_q, num_g, dim, num_ids, num_cams)
    gen_s = time.perf_counter() - t0

    def run_eval():
        return evaluate_features(q, g, qp, gp, qc, gc, chunk=chunk)

    def run_gemm():
        for _ in _distance_chunks(q, g, torch.arange(num_q), chunk):
            pass

    # Peak extra memory of one evaluation, measured first on a fresh high-water mark.
    release_free_heap()
    rss_before = status_kb("VmRSS") or 0
    reset_ok = reset_peak()
    result = run_eval()
    extra_mb = (peak_kb(reset_ok) - rss_before) / 1024

    t_gemm, t_eval = [], []
    for _ in range(repeats):
        s = time.perf_counter()
        run_gemm()
        t_gemm.append(time.perf_counter() - s)
        s = time.perf_counter()
        result = run_eval()
        t_eval.append(time.perf_counter() - s)

    out = {
        "size": name,
        "queries": num_q,
        "gallery": num_g,
        "dim": dim,
        "chunk": chunk,
        "threads": torch.get_num_threads(),
        "generate_s": round(gen_s, 2),
        "gemm_s": min(t_gemm),
        "eval_s": min(t_eval),
        "ratio": min(t_eval) / min(t_gemm),
        "extra_mb": extra_mb,
        "memory_method": "VmHWM after clear_refs" if reset_ok else "ru_maxrss (upper bound)",
        "metrics": result.as_dict(),
        "num_skipped": result.num_skipped,
    }
    if num_q * num_g <= DENSE_LIMIT:
        s = time.perf_counter()
        ref = dense_reference(q, g, qp, gp, qc, gc, chunk)
        out["dense_s"] = time.perf_counter() - s
        diffs = [
            abs(ref["mAP"] - result.mAP),
            abs(ref["mINP"] - result.mINP),
            max(abs(a - b) for a, b in zip(ref["cmc"], result.cmc, strict=True)),
        ]
        out["dense_max_abs_diff"] = max(diffs)
        out["dense_equal"] = max(diffs) <= 1e-9 and ref["num_valid"] == result.num_valid_queries
    return out


def parse_sizes(text: str, quick: bool) -> dict[str, tuple]:
    table = QUICK_SIZES if quick else SIZES
    if not text:
        return dict(table)
    chosen = {}
    for item in text.split(","):
        item = item.strip()
        if item in SIZES or item in QUICK_SIZES:
            chosen[item] = {**SIZES, **QUICK_SIZES}[item]
        elif m := re.fullmatch(r"(\d+)x(\d+)x(\d+)", item):
            q, g, d = map(int, m.groups())
            chosen[item] = (q, g, d, max(2, g // 25), 6)
        else:
            raise SystemExit(f"--sizes: unknown size {item!r}; use market, msmt or QxGxD")
    return chosen


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--sizes", default="", help="comma-separated: market, msmt or QxGxD")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=None, help="query rows per GEMM chunk")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    from unreid.eval.metrics import DEFAULT_CHUNK

    chunk = args.chunk or DEFAULT_CHUNK
    if args._worker:
        name, spec = json.loads(args._worker)
        print(json.dumps(worker(name, tuple(spec), args.repeats, chunk)))
        return 0

    rows = []
    for name, spec in parse_sizes(args.sizes, args.quick).items():
        cmd = [sys.executable, __file__, "--_worker", json.dumps([name, spec])]
        cmd += ["--repeats", str(args.repeats), "--chunk", str(chunk)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"done {name}: eval {r['eval_s']:.2f}s gemm {r['gemm_s']:.2f}s", file=sys.stderr)

    header = (
        f"{'size':<13} {'Q x G x D':<21} {'GEMM s':>7} {'eval s':>7} {'ratio':>6} "
        f"{'extra MB':>9} {'mAP':>6} {'R1':>6} {'mINP':>6} {'dense s':>8} {'= dense':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        m = r["metrics"]
        dense = f"{r['dense_s']:8.2f} {str(r['dense_equal']):>8}" if "dense_s" in r else " " * 17
        print(
            f"{r['size']:<13} {r['queries']}x{r['gallery']}x{r['dim']:<7} "
            f"{r['gemm_s']:7.2f} {r['eval_s']:7.2f} {r['ratio']:6.2f} {r['extra_mb']:9.0f} "
            f"{100 * m['mAP']:6.1f} {100 * m['R1']:6.1f} {100 * m['mINP']:6.1f} {dense}"
        )
    return finish(args.out, {"quick": args.quick, "results": rows}, rows)


if __name__ == "__main__":
    sys.exit(main())
