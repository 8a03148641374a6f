"""Re-ID retrieval metrics: mAP, CMC and mINP under the Market-1501 protocol, exact and bounded.

Protocol (Zheng et al., ICCV 2015; as in torchreid's ``eval_market1501``), per query:

- gallery images with ``pid == -1`` are junk and are ignored;
- gallery images with the query's pid AND the query's camera are ignored (they are
  too easy); ``all_gallery=True`` keeps them (all-gallery protocol, e.g. one camera);
- ``exclude`` (query, gallery) pairs are ignored too: the all-gallery protocol passes the
  query image itself when the gallery holds it (:mod:`unreid.eval.protocol`);
- every other gallery image is ranked; those with the query's pid are the positives,
  everything else (pid-0 distractors included) is a negative;
- a query without any positive is skipped and counted in ``num_skipped``.

Ties: the ranking is a *stable* ascending sort of the query's distance row, i.e.
equal distances are ordered by gallery index (lower index ranks first). Equivalently
the rank of a positive j is 1 + the number of valid gallery items k with
``(d_k, k) < (d_j, j)`` lexicographically. The fast path below reproduces this
exactly (property-tested against a stable argsort reference).

Metrics, with r_1 < r_2 < ... < r_n the 1-based ranks of the n positives among the
valid items of a query:

- AP = (1/n) sum_m m / r_m, mAP the mean over valid queries;
- CMC[k] = share of valid queries with r_1 <= k + 1 (cumulative, 0-based k);
- INP = n / r_n (Ye et al., TPAMI 2021, "Deep Learning for Person Re-identification:
  A Survey and Outlook"), mINP the mean over valid queries.

Algorithm (why no sort): the metrics need only the ranks of the positives (a few
per query), not the full order of the row. For one row the rank of positive j is a
count "how many valid items are lexicographically before (d_j, j)". Counting is done
for all positives of a block of rows at once, in O(G) passes with small constants:

1. bucket every distance of a row into B bins spanning [min, max] of the row's
   positive distances with a monotone map (items outside fall in the first/last bin;
   invalid items -- junk and same-camera matches -- go to a sentinel bin B that no
   positive ever uses);
2. one ``bincount`` gives a per-row histogram; its exclusive cumsum at a positive's
   bin counts every item in a strictly lower bin, which all have smaller distance
   because the map is monotone;
3. the few items that share a bin with some positive ("refine" items, about
   G / B per positive) are gathered and sorted by (row, bin, distance, index); a
   positive's position inside its (row, bin) group adds the exact remainder,
   ties included.

Measured on 2 Zen4 cores at MSMT17 width (G = 82,161): the GEMM costs ~39 ns per
distance, a full stable sort of the rows ~50 ns (>1x the GEMM: too slow), a batched
``torch.searchsorted`` of the row into the sorted positive distances ~15 ns, and
the histogram path above ~3-5 ns. See bench/eval_bench.py.

Memory: the distance matrix is produced and consumed ``chunk`` query rows at a time
(O(chunk x G)); counting works on sub-blocks of ~4M distances so its temporaries (one
reused float buffer whose bits become the int bin keys, a bool mask, a histogram) stay
at ~30 MB. Gallery features are never copied (their inverse norms scale the GEMM
output instead).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unreid.errors import ConfigError, DataError
from unreid.eval.protocol import resolve_protocol, self_matches
from unreid.io import FeatureFile

__all__ = [
    "EvalResult",
    "cosine_distance",
    "evaluate",
    "evaluate_features",
    "evaluate_npz",
    "evaluate_protocol",
]

ArrayLike = np.ndarray | torch.Tensor

# Query rows per distance chunk in evaluate_features: >= 128 rows keeps the GEMM at full
# speed on CPU; 256 x 82,161 float32 is 84 MB at MSMT17 size.
DEFAULT_CHUNK = 256
# Distances per counting sub-block (rows x gallery): ~16 MB of float32, so the counting
# temporaries stay in the last-level cache instead of streaming through DRAM.
_COUNT_BLOCK_ELEMS = 1 << 22
_MIN_RANK_REPORTED = 20  # as_dict() reports R1, R5, R10, R20


@dataclass(frozen=True, eq=False)  # eq=False: ``cmc`` is an array
class EvalResult:
    """Retrieval metrics. ``mAP``, ``mINP`` and ``cmc`` are fractions in [0, 1].

    Attributes:
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty over valid queries.
        cmc: (max(max_rank, 20),) float64, ``cmc[k]`` = share of valid queries whose
            first positive is within the top k + 1.
        num_valid_queries: queries with at least one positive in the gallery.
        num_skipped: queries without any (ignored by every metric).
        protocol: ``market`` or ``all-gallery`` (:mod:`unreid.eval.protocol`).
        note: a line to show with the result (why the protocol was chosen), or None.
    """

    mAP: float
    mINP: float
    cmc: np.ndarray
    num_valid_queries: int
    num_skipped: int
    protocol: str = "market"
    note: str | None = None

    def rank(self, k: int) -> float:
        """Rank-k accuracy (fraction), k >= 1 and <= len(cmc)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank k must be in [1, {len(self.cmc)}], got {k}")
        return float(self.cmc[k - 1])

    def as_dict(self) -> dict[str, float | int]:
        """Keys mAP, mINP, R1, R5, R10, R20 (fractions) and num_valid; ``protocol`` too
        when it is not the Market-1501 one."""
        out: dict[str, float | int] = {"mAP": float(self.mAP), "mINP": float(self.mINP)}
        for k in (1, 5, 10, 20):
            out[f"R{k}"] = self.rank(k)
        out["num_valid"] = int(self.num_valid_queries)
        if self.protocol != "market":
            out["protocol"] = self.protocol  # type: ignore[assignment]
        return out

    def format_table(self) -> str:
        """Two-column text table, metrics in percent with one decimal."""
        rows = [("mAP", self.mAP), ("mINP", self.mINP)]
        rows += [(f"Rank-{k}", self.rank(k)) for k in (1, 5, 10, 20)]
        lines = [f"{'metric':<8} {'value':>6}"]
        lines += [f"{name:<8} {100.0 * value:>6.1f}" for name, value in rows]
        lines.append(
            f"queries: {self.num_valid_queries} evaluated, {self.num_skipped} skipped "
            "(no valid match)"
        )
        if self.protocol != "market":
            lines.append(f"protocol: {self.protocol}")
        return "\n".join(lines)


# ---------------------------------------------------------------- protocol


@dataclass(frozen=True)
class _Pairs:
    """All (query, gallery) positive pairs and ignored same-camera pairs.

    ``*_q`` are query indices (sorted ascending), ``*_g`` gallery indices (ascending
    within a query); int64 tensors.
    """

    pos_q: torch.Tensor
    pos_g: torch.Tensor
    rem_q: torch.Tensor
    rem_g: torch.Tensor
    junk_g: torch.Tensor  # gallery indices with pid -1


def _as_long(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 1:
        raise DataError(f"{name} must be a 1-D array, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise DataError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.to(torch.int64).cpu()


def _match_pairs(
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    all_gallery: bool,
    exclude: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> _Pairs:
    """Same-identity (query, gallery) pairs, via gallery indices grouped by pid (CSR);
    ``exclude`` (query, gallery) pairs are never positives and are ignored in ranking."""
    junk = g_pids == -1
    keep = torch.nonzero(~junk).squeeze(1)
    # Gallery (non-junk) indices grouped by pid; a stable sort keeps indices ascending
    # inside a group, so pairs come out sorted by (query, gallery index).
    kept_pids = g_pids[keep]
    order = torch.sort(kept_pids, stable=True).indices
    grouped = keep[order]
    uniq, counts = torch.unique_consecutive(kept_pids[order], return_counts=True)
    if len(uniq) == 0:  # no identity in the gallery: a sentinel group that no pid matches
        uniq, counts = torch.tensor([-1]), torch.tensor([0])
    starts = torch.cumsum(counts, 0) - counts
    # Group of every query; queries whose pid is absent (or -1) get 0 pairs.
    grp = torch.searchsorted(uniq, q_pids).clamp_max(len(uniq) - 1)
    found = (uniq[grp] == q_pids) & (q_pids != -1)
    n_same = torch.where(found, counts[grp], 0)
    first = torch.where(found, starts[grp], 0)
    pair_q = torch.repeat_interleave(torch.arange(len(q_pids)), n_same)
    group_first = torch.repeat_interleave(torch.cumsum(n_same, 0) - n_same, n_same)
    offset = torch.arange(len(pair_q)) - group_first
    pair_g = grouped[first[pair_q] + offset]
    if all_gallery:
        same_cam = torch.zeros(len(pair_q), dtype=torch.bool)
    else:
        same_cam = g_camids[pair_g] == q_camids[pair_q]
    rem_q, rem_g = pair_q[same_cam], pair_g[same_cam]
    pos_q, pos_g = pair_q[~same_cam], pair_g[~same_cam]
    if exclude is not None and len(exclude[0]):
        # Flat keys q * G + g sort by (query, gallery): the order _evaluate_rows needs.
        width = len(g_pids)
        ex_key = torch.unique(exclude[0] * width + exclude[1])
        drop = torch.isin(pos_q * width + pos_g, ex_key)
        pos_q, pos_g = pos_q[~drop], pos_g[~drop]
        rem_key = torch.unique(torch.cat([rem_q * width + rem_g, ex_key]))
        rem_q, rem_g = rem_key // width, rem_key % width
    return _Pairs(
        pos_q=pos_q,
        pos_g=pos_g,
        rem_q=rem_q,
        rem_g=rem_g,
        junk_g=torch.nonzero(junk).squeeze(1),
    )


# ---------------------------------------------------------------- ranks


def _num_bins(num_gallery: int) -> int:
    # ~4 items per bin when a row's items spread over its positives' range: the refine
    # step then touches ~4 items per positive, while the histogram (rows x B) stays far
    # smaller than the block itself. B < 2**22 is required by the key trick below.
    return int(min(16384, max(16, num_gallery // 4)))


# Float -> int keys without a conversion pass: adding 1.5 * 2**(mantissa bits) to a value
# in [0, 2**22) rounds it to an integer held in the low mantissa bits, so the float's
# bit pattern *is* (magic bits + integer). Rounding is monotone, which is all we need.
_MAGIC = {
    torch.float32: (1.5 * 2.0**23, torch.int32),
    torch.float64: (1.5 * 2.0**52, torch.int64),
}


class _Workspace:
    """Scratch buffer reused across counting blocks: fresh 16 MB allocations cost page
    faults comparable to the arithmetic itself."""

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None

    def get(self, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        n = shape[0] * shape[1]
        if self._buf is None or self._buf.dtype != dtype or self._buf.numel() < n:
            self._buf = torch.empty(n, dtype=dtype)
        return self._buf[:n].view(shape)


def _block_ranks(
    dist: torch.Tensor,
    pos_row: torch.Tensor,
    pos_col: torch.Tensor,
    rem_row: torch.Tensor,
    rem_col: torch.Tensor,
    junk_col: torch.Tensor,
    workspace: _Workspace | None = None,
) -> torch.Tensor:
    """1-based ranks of positives among the valid items of their row, stable tie-break.

    Args:
        dist: (R, G) float32/float64 distances of R query rows, |d| <= 1e30.
        pos_row, pos_col: (P,) int64 positions of the positives; rows without
            positives are allowed (their items are counted for nobody).
        rem_row, rem_col: positions ignored by the protocol (same pid, same camera).
        junk_col: gallery columns ignored in every row.
        workspace: optional scratch reused between calls.

    Returns:
        (P,) int64: rank of ``dist[pos_row[i], pos_col[i]]`` = 1 + #{valid k in that row
        with (d_k, k) < (d_j, j)}, where "valid" excludes junk and removed positions.
    """
    num_rows, num_g = dist.shape
    num_bins = _num_bins(num_g)
    stride = num_bins + 1  # bins 0..B-1 plus the sentinel bin B for ignored items
    magic, int_dtype = _MAGIC[dist.dtype]
    magic_bits = int(torch.tensor(magic, dtype=dist.dtype).view(int_dtype))

    # Per-row range of the positive distances: bins are only needed where thresholds are.
    thr = dist[pos_row, pos_col]
    lo = torch.full((num_rows,), float("inf"), dtype=dist.dtype)
    hi = torch.full((num_rows,), -float("inf"), dtype=dist.dtype)
    lo.scatter_reduce_(0, pos_row, thr, "amin")
    hi.scatter_reduce_(0, pos_row, thr, "amax")
    no_pos = torch.isinf(lo)
    lo[no_pos] = 0
    hi[no_pos] = 0
    # A zero span (one positive) still needs a fine grid around it; the floor also keeps
    # the scale finite, so the affine map below never produces NaN.
    span = torch.maximum(hi - lo, 1e-6 * (lo.abs() + 1))
    scale = (num_bins - 3) / span

    # bin = clamp(round((d - lo) * scale + 1), 0, B - 1): a composition of monotone
    # non-decreasing float operations, so d_k < d_j whenever bin_k < bin_j. Positives
    # land in bins 1..B-2; items below every positive share bin 0.
    ws = workspace if workspace is not None else _Workspace()
    key_f = ws.get((num_rows, num_g), dist.dtype)
    torch.sub(dist, lo[:, None], out=key_f)
    key_f.mul_(scale[:, None]).add_(1 + magic).clamp_(magic, magic + num_bins - 1)
    key = key_f.view(int_dtype)  # = magic_bits + bin
    sentinel = magic_bits + num_bins
    if len(junk_col):
        key.index_fill_(1, junk_col, sentinel)
    if len(rem_row):
        key[rem_row, rem_col] = sentinel
    # Flat bin id = row * stride + bin, in place.
    key -= (magic_bits - torch.arange(num_rows, dtype=int_dtype) * stride)[:, None]
    flat_key = key.view(-1)
    pos_grp = flat_key[pos_row * num_g + pos_col].to(torch.int64)

    # Histogram per row; its exclusive cumsum counts the items in strictly lower bins.
    hist = torch.bincount(flat_key, minlength=num_rows * stride)
    below = torch.cumsum(hist.view(num_rows, stride), dim=1).view(-1) - hist
    base = below[pos_grp]

    # Refine: items sharing a bin with some positive of their row, sorted by
    # (group, distance, gallery index). nonzero() yields flat positions in row-major order,
    # so gallery index order inside a row is already there; two stable sorts add the rest.
    flagged = torch.zeros(num_rows * stride, dtype=torch.bool)
    flagged[pos_grp] = True
    refine = torch.nonzero(torch.index_select(flagged, 0, flat_key)).squeeze(1)
    ref_dist = dist.reshape(-1)[refine]
    order = torch.sort(ref_dist, stable=True).indices
    grp_sorted, order2 = torch.sort(flat_key[refine][order].to(torch.int64), stable=True)
    order = order[order2]
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))
    # Each positive is itself a refine item: find it, then its offset inside its group.
    pos_in_sorted = position[torch.searchsorted(refine, pos_row * num_g + pos_col)]
    group_start = torch.searchsorted(grp_sorted, pos_grp)
    return 1 + base + (pos_in_sorted - group_start)


def _metrics(
    ranks: torch.Tensor, pos_q: torch.Tensor, num_queries: int, max_rank: int
) -> EvalResult:
    """AP, INP and CMC from the positives' ranks (ranks distinct within a query)."""
    valid = torch.zeros(num_queries, dtype=torch.bool)
    valid[pos_q] = True
    num_valid = int(valid.sum())
    num_skipped = num_queries - num_valid
    if num_valid == 0:
        raise DataError(
            f"no query has a valid match in the gallery ({num_queries} queries skipped); "
            "if all images come from one camera use the all-gallery protocol "
            "(--protocol all-gallery, or eval.protocol=all-gallery in a config)"
        )
    # Sort positives by (query, rank) to number them m = 1..n inside each query.
    key = pos_q * (int(ranks.max()) + 1) + ranks
    order = torch.argsort(key)
    q_sorted = pos_q[order]
    r_sorted = ranks[order].to(torch.float64)
    n_pos = torch.bincount(q_sorted, minlength=num_queries)
    first_idx = torch.cumsum(n_pos, 0) - n_pos
    m = torch.arange(len(q_sorted)) - first_idx[q_sorted] + 1
    ap_sum = torch.zeros(num_queries, dtype=torch.float64)
    ap_sum.index_add_(0, q_sorted, m.to(torch.float64) / r_sorted)
    n_valid = n_pos[valid].to(torch.float64)
    ap = ap_sum[valid] / n_valid
    first_rank = ranks.new_full((num_queries,), torch.iinfo(torch.int64).max)
    first_rank.scatter_reduce_(0, pos_q, ranks, "amin")
    last_rank = torch.zeros(num_queries, dtype=torch.int64)
    last_rank.scatter_reduce_(0, pos_q, ranks, "amax")
    inp = n_valid / last_rank[valid].to(torch.float64)
    hits = torch.bincount(first_rank[valid].clamp_max(max_rank + 1) - 1, minlength=max_rank + 1)
    cmc = torch.cumsum(hits[:max_rank], 0).to(torch.float64) / num_valid
    return EvalResult(
        mAP=float(ap.mean()),
        mINP=float(inp.mean()),
        cmc=cmc.numpy(),
        num_valid_queries=num_valid,
        num_skipped=num_skipped,
    )


def _labels(
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    num_q: int,
    num_g: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    qp, gp = _as_long(q_pids, "q_pids"), _as_long(g_pids, "g_pids")
    qc, gc = _as_long(q_camids, "q_camids"), _as_long(g_camids, "g_camids")
    for name, arr, n in (
        ("q_pids", qp, num_q),
        ("q_camids", qc, num_q),
        ("g_pids", gp, num_g),
        ("g_camids", gc, num_g),
    ):
        if len(arr) != n:
            side = "queries" if name.startswith("q") else "gallery items"
            raise DataError(f"{name} has {len(arr)} entries but there are {n} {side}")
    return qp, gp, qc, gc


def _evaluate_rows(
    rows: Iterator[tuple[torch.Tensor, torch.Tensor]],
    pairs: _Pairs,
    num_q: int,
    num_g: int,
    max_rank: int,
) -> EvalResult:
    """Ranks for every positive pair, from (query indices, distance rows) chunks."""
    all_ranks = torch.empty(len(pairs.pos_q), dtype=torch.int64)
    block_rows = max(1, _COUNT_BLOCK_ELEMS // max(num_g, 1))
    workspace = _Workspace()
    for q_idx, dist in rows:
        for s in range(0, len(q_idx), block_rows):
            sub_q = q_idx[s : s + block_rows]  # ascending query indices
            bounds = sub_q[[0, -1]]
            # Every query between the first and last of sub_q that is not in sub_q has no
            # positive, so the positive pairs of sub_q are one contiguous slice...
            p0 = int(torch.searchsorted(pairs.pos_q, bounds[:1]))
            p1 = int(torch.searchsorted(pairs.pos_q, bounds[1:], right=True))
            pos_row = torch.searchsorted(sub_q, pairs.pos_q[p0:p1])
            # ...but ignored pairs may belong to skipped queries in between: drop those.
            r0 = int(torch.searchsorted(pairs.rem_q, bounds[:1]))
            r1 = int(torch.searchsorted(pairs.rem_q, bounds[1:], right=True))
            rem_q = pairs.rem_q[r0:r1]
            rem_row = torch.searchsorted(sub_q, rem_q)
            mine = sub_q[rem_row] == rem_q
            all_ranks[p0:p1] = _block_ranks(
                dist[s : s + block_rows],
                pos_row,
                pairs.pos_g[p0:p1],
                rem_row[mine],
                pairs.rem_g[r0:r1][mine],
                pairs.junk_g,
                workspace,
            )
    # CMC past a small gallery is well defined (cumulative), so the curve is always long
    # enough for the Rank-20 that as_dict() reports, even if a caller clipped max_rank.
    return _metrics(all_ranks, pairs.pos_q, num_q, max(max_rank, _MIN_RANK_REPORTED))


def _exclude(
    exclude: tuple[ArrayLike, ArrayLike] | None, num_q: int, num_g: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Validated (query, gallery) index pairs to ignore, as int64 tensors."""
    if exclude is None:
        return None
    eq, eg = _as_long(exclude[0], "exclude[0]"), _as_long(exclude[1], "exclude[1]")
    if len(eq) != len(eg):
        raise DataError(f"exclude holds {len(eq)} query but {len(eg)} gallery indices")
    if len(eq) and (int(eq.min()) < 0 or int(eq.max()) >= num_q or int(eg.min()) < 0
                    or int(eg.max()) >= num_g):
        raise DataError(f"exclude indices must lie in [0, {num_q}) x [0, {num_g})")
    return eq, eg


def _valid_queries(pairs: _Pairs) -> torch.Tensor:
    """Ascending indices of the queries with at least one positive."""
    return torch.unique_consecutive(pairs.pos_q)


# ---------------------------------------------------------------- public API


def evaluate(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    *,
    max_rank: int = 50,
    all_gallery: bool = False,
    exclude: tuple[ArrayLike, ArrayLike] | None = None,
) -> EvalResult:
    """Market-1501 protocol metrics from a distance matrix (smaller = more similar).

    Args:
        distmat: (Q, G) float distances (numpy or torch, CPU); must be finite.
        q_pids, g_pids: (Q,), (G,) integer identities; gallery pid -1 = junk (ignored),
            pid 0 distractors are ordinary negatives.
        q_camids, g_camids: (Q,), (G,) integer camera ids.
        max_rank: length of the returned CMC curve (at least 20: Rank-20 is always
            reported; ranks past the gallery size simply stay at their final value).
        all_gallery: keep same-identity same-camera gallery images (all-gallery protocol).
        exclude: (P,), (P,) integer (query, gallery) index pairs ignored as junk for
            that query (the query image itself, under the all-gallery protocol).

    Ties are broken by gallery index (stable sort); see the module docstring.
    """
    dist = torch.as_tensor(distmat).detach()
    if dist.ndim != 2:
        raise DataError(f"distmat must be 2-D (queries x gallery), got shape {tuple(dist.shape)}")
    # Integers -> float64 and half floats -> float32 are exact, so the order is unchanged.
    work_dtype = (
        dist.dtype
        if dist.dtype in (torch.float32, torch.float64)
        else (torch.float32 if dist.dtype.is_floating_point else torch.float64)
    )
    num_q, num_g = dist.shape
    qp, gp, qc, gc = _labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g)
    pairs = _match_pairs(qp, gp, qc, gc, all_gallery, _exclude(exclude, num_q, num_g))
    valid = _valid_queries(pairs)
    chunk = max(1, _COUNT_BLOCK_ELEMS // max(num_g, 1))

    def rows() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for s in range(0, len(valid), chunk):
            q_idx = valid[s : s + chunk]
            part = dist[q_idx.to(dist.device)].to("cpu", work_dtype)
            # Checked per chunk: a whole-matrix check would allocate Q x G temporaries.
            # The bound keeps (d - lo) * scale in _block_ranks free of overflow to NaN.
            if not bool((part.abs() <= 1e30).all()):  # False for NaN too
                raise DataError(
                    "distmat contains NaN, inf or values above 1e30; check the features "
                    "it came from"
                )
            yield q_idx, part

    return _evaluate_rows(rows(), pairs, num_q, num_g, max_rank)


def _features(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise DataError(f"{name} must be 2-D (N, D), got shape {tuple(t.shape)}")
    t = t.detach().cpu()
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    # A NaN or inf entry makes its row's norm non-finite: one cheap reduction instead of
    # an N x D boolean temporary (168 MB at MSMT17 size). Finite rows whose norm overflows
    # are rejected too; their cosine would be garbage anyway.
    if not bool(torch.isfinite(torch.linalg.vector_norm(t, dim=1)).all()):
        raise DataError(f"{name} contains NaN or inf values; the model or the saved file is broken")
    return t


def _distance_chunks(
    q_feats: torch.Tensor, g_feats: torch.Tensor, q_idx: torch.Tensor, chunk: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (query indices, (len, G) cosine distances) for ``q_idx`` in chunks.

    The gallery is not copied: normalising it would cost a (G, D) copy (673 MB at MSMT17
    size), so its inverse norms scale the GEMM output columns instead.
    """
    g_inv = 1.0 / torch.linalg.vector_norm(g_feats, dim=1).clamp_min(1e-12)
    for s in range(0, len(q_idx), chunk):
        idx = q_idx[s : s + chunk]
        q = torch.nn.functional.normalize(q_feats[idx], dim=1)
        sim = q @ g_feats.T
        yield idx, sim.mul_(g_inv.neg()).add_(1)


def cosine_distance(q_feats: ArrayLike, g_feats: ArrayLike) -> torch.Tensor:
    """(Q, G) cosine distance 1 - q.g of L2-normalised features, dense (small sets only).

    Same formula and code as the chunks :func:`evaluate_features` evaluates (bitwise equal
    to them wherever the GEMM result does not depend on the number of rows).
    """
    q, g = _features(q_feats, "q_feats"), _features(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"q_feats has dim {q.shape[1]} but g_feats has dim {g.shape[1]}")
    parts = [d for _, d in _distance_chunks(q, g, torch.arange(len(q)), max(len(q), 1))]
    return torch.cat(parts) if parts else torch.zeros(0, len(g))


def evaluate_features(
    q_feats: ArrayLike,
    g_feats: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    *,
    chunk: int = DEFAULT_CHUNK,
    all_gallery: bool = False,
    max_rank: int = 50,
    exclude: tuple[ArrayLike, ArrayLike] | None = None,
) -> EvalResult:
    """Market-1501 metrics on cosine distance, computed ``chunk`` query rows at a time.

    Args:
        q_feats, g_feats: (Q, D), (G, D) float features (L2-normalised here; float32
            unless float64 is given).
        q_pids, g_pids, q_camids, g_camids: as in :func:`evaluate`.
        chunk: query rows per distance GEMM; peak extra memory ~ chunk x G x 4 bytes
            plus ~30 MB of counting temporaries and O(#positive pairs) index arrays.
        all_gallery, max_rank, exclude: as in :func:`evaluate`.

    Distance = 1 - q_hat . g_hat, computed on CPU (CUDA inputs are copied); queries
    without a positive are skipped before the GEMM.
    """
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    q, g = _features(q_feats, "q_feats"), _features(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise DataError(f"q_feats has dim {q.shape[1]} but g_feats has dim {g.shape[1]}")
    if q.dtype != g.dtype:
        q, g = q.to(torch.float64), g.to(torch.float64)
    qp, gp, qc, gc = _labels(q_pids, g_pids, q_camids, g_camids, len(q), len(g))
    pairs = _match_pairs(qp, gp, qc, gc, all_gallery, _exclude(exclude, len(q), len(g)))
    valid = _valid_queries(pairs)
    rows = _distance_chunks(q, g, valid, chunk)
    return _evaluate_rows(rows, pairs, len(q), len(g), max_rank)


def evaluate_npz(
    path: str | Path,
    *,
    protocol: str = "auto",
    rerank: bool = False,
    max_rank: int = 50,
) -> EvalResult:
    """Evaluate saved features: an .npz with feats (N, D), pids (N,), camids (N,) and
    split (N,) strings "query" / "gallery" (rows marked "train" are ignored).

    ``protocol``: ``auto``, ``market`` or ``all-gallery`` (:mod:`unreid.eval.protocol`;
    all-gallery ignores a query's own image by the file's ``paths``, when it has them).

    ``rerank=True`` evaluates the k-reciprocal re-ranked distance of
    :func:`unreid.cluster.rerank` instead of the cosine distance.
    """
    data = FeatureFile.load(path, require=("pids", "camids", "split"))
    feats, pids, camids = data.feats, data.pids, data.camids
    assert data.split is not None and pids is not None and camids is not None  # required
    split = data.split.astype(str)
    is_q, is_g = split == "query", split == "gallery"
    if not is_q.any() or not is_g.any():
        raise DataError(
            f"{path}: split needs both 'query' and 'gallery' rows "
            f"({int(is_q.sum())} query, {int(is_g.sum())} gallery)"
        )
    labels = (pids[is_q], pids[is_g], camids[is_q], camids[is_g])
    paths = None if data.paths is None else (data.paths[is_q], data.paths[is_g])
    return evaluate_protocol(feats[is_q], feats[is_g], *labels, protocol=protocol,
                             paths=paths, rerank=rerank, max_rank=max_rank)


def evaluate_protocol(
    q_feats: ArrayLike,
    g_feats: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    *,
    protocol: str = "auto",
    paths: tuple[np.ndarray, np.ndarray] | None = None,
    rerank: bool = False,
    max_rank: int = 50,
) -> EvalResult:
    """Cosine (or ``rerank``: k-reciprocal re-ranked) metrics under ``protocol``.

    Args:
        q_feats, g_feats, q_pids, g_pids, q_camids, g_camids: as in :func:`evaluate_features`.
        protocol: ``auto``, ``market`` or ``all-gallery`` (:func:`unreid.eval.protocol.
            resolve_protocol`); the result's ``protocol`` and ``note`` say what was used.
        paths: (Q,), (G,) image paths; under all-gallery a gallery image that is the query
            image itself is ignored for that query. None: nothing is excluded.
    """
    chosen = resolve_protocol(protocol, np.asarray(q_camids), np.asarray(g_camids))
    exclude = None
    if chosen.all_gallery and paths is not None:
        exclude = self_matches(paths[0], paths[1])
    labels = (q_pids, g_pids, q_camids, g_camids)
    if rerank:
        # unreid.cluster brings scikit-learn (~1 s of CPU): only a re-ranked evaluation
        # (eval --rerank, eval-features --rerank) pays for it
        from unreid.cluster import rerank as k_reciprocal_rerank

        dist = k_reciprocal_rerank(torch.as_tensor(q_feats), torch.as_tensor(g_feats))
        result = evaluate(dist, *labels, max_rank=max_rank, all_gallery=chosen.all_gallery,
                          exclude=exclude)
    else:
        result = evaluate_features(q_feats, g_feats, *labels, max_rank=max_rank,
                                   all_gallery=chosen.all_gallery, exclude=exclude)
    return dataclasses.replace(result, protocol=chosen.name, note=chosen.note)
