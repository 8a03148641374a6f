"""Batch samplers for training: P identities x K images, or plain random batches.

Both samplers are *counter based*: the batch of step ``s`` on rank ``r`` is a
pure function of ``(seed, s, r)`` and the labels, so

- the state is two integers (``seed``, ``step``) that ``torch.load(...,
  weights_only=True)`` accepts, and resuming from ``state_dict()`` gives exactly
  the batches the uninterrupted run would have given;
- DistributedDataParallel ranks need no communication: every rank derives the
  same shuffled order of identities (same seed) and takes its own slice of it.

The stream of items (identities for :class:`PKSampler`, sample indices for
:class:`RandomBatchSampler`) is a sequence of shuffled epochs. Global step ``s``
takes ``per_step = chunk * world_size`` consecutive items of one epoch's
permutation, and rank ``r`` takes the ``r``-th chunk of them. An epoch's last
``n % per_step`` items are skipped (drop-last) so that one step never straddles
two permutations: that would let an identity appear twice in a batch or on two
ranks. Every permutation is uniform, so each item is used equally often in
expectation, and exactly once per epoch except for the skipped tail.

The engine builds a new sampler whenever the pseudo-labels change (every
epoch); give it a different seed each time (e.g. derived from the run seed and
the epoch) so that epochs do not repeat the same order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unreid.errors import TrainingError

__all__ = ["PKSampler", "ProxySampler", "RandomBatchSampler"]

# Stream tags keep the random streams of "which items" and "which images of an
# identity" independent although both derive from the same seed.
_TAG_ORDER = 0
_TAG_INSTANCES = 1


class _EpochStream:
    """Shuffled epochs over ``num_items`` items, sliced into per-step, per-rank chunks."""

    def __init__(self, num_items: int, chunk: int, seed: int, rank: int, world_size: int) -> None:
        self.num_items = num_items
        self.chunk = chunk
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.per_step = chunk * world_size
        self.steps_per_epoch = num_items // self.per_step
        self._cached_epoch = -1
        self._cached_perm = np.empty(0, dtype=np.int64)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, _TAG_ORDER, epoch])
            self._cached_perm = rng.permutation(self.num_items)
            self._cached_epoch = epoch
        return self._cached_perm

    def items(self, step: int) -> np.ndarray:
        """(chunk,) int64 item ids of this rank at global step ``step``."""
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self.per_step + self.rank * self.chunk
        return self._perm(epoch)[start : start + self.chunk].astype(np.int64)


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")


class _CounterSampler:
    """Shared state handling: ``seed`` and the next ``step`` are the whole state."""

    _kind = ""

    def __init__(self, stream: _EpochStream, seed: int) -> None:
        self._stream = stream
        self.seed = int(seed)
        self.step = 0

    @property
    def steps_per_epoch(self) -> int:
        """Global steps until every item has been drawn once (the skipped tail aside)."""
        return self._stream.steps_per_epoch

    def _fingerprint(self) -> dict[str, int]:
        raise NotImplementedError

    def next_batch(self) -> np.ndarray:
        batch = self._batch(self.step)
        self.step += 1
        return batch

    def _batch(self, step: int) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Plain ints and a str (safe for ``torch.load(weights_only=True)``).

        ``step`` counts global steps, so the state of rank 0 is valid on every
        rank; resuming with another world size continues the same seed with a
        different (but still valid) sharding.
        """
        return {"kind": self._kind, "seed": self.seed, "step": self.step, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` left off; refuses a state from other labels or sizes."""
        expected = {"kind": self._kind, **self._fingerprint()}
        got = {k: state.get(k) for k in expected}
        if got != expected:
            raise TrainingError(
                f"sampler state {got} does not match this sampler {expected}: the checkpoint was "
                "written with other pseudo-labels or batch settings; resume with the same config"
            )
        self.seed = int(state["seed"])
        self.step = int(state["step"])
        self._stream.seed = self.seed
        self._stream._cached_epoch = -1


class PKSampler(_CounterSampler):
    """P distinct (pseudo-)identities x K images per batch.

    Args:
        labels: (N,) integer (pseudo-)identity of every dataset index; -1 marks
            outliers, which are never sampled.
        num_identities: P, identities per batch on each rank.
        num_instances: K, images per identity; an identity with fewer than K
            images is sampled with replacement, otherwise without.
        seed: decides everything; all DDP ranks must pass the same seed.
        rank, world_size: DDP position; ranks draw disjoint identities at each step.

    ``next_batch()`` returns (P*K,) int64 dataset indices, identity-major
    (K consecutive entries per identity).

    Raises:
        TrainingError: fewer than P*world_size identities exist.
    """

    _kind = "pk"

    def __init__(
        self,
        labels: np.ndarray,
        num_identities: int,
        num_instances: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_rank(rank, world_size)
        if num_identities < 1 or num_instances < 1:
            raise ValueError("num_identities and num_instances must be >= 1")
        labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
        keep = np.flatnonzero(labels >= 0)
        order = keep[np.argsort(labels[keep], kind="stable")]
        ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        needed = num_identities * world_size
        if len(ids) < needed:
            raise TrainingError(
                f"only {len(ids)} (pseudo-)identities with at least one image, but "
                f"optim.num_identities={num_identities} x {world_size} process(es) = {needed} "
                "are needed per step: lower optim.num_identities, or check cluster.eps "
                "(too small leaves everything an outlier, too large merges everything)"
            )
        self.num_identities = num_identities
        self.num_instances = num_instances
        self.rank = rank
        self.world_size = world_size
        self.identities = ids  # (I,) label value of identity slot i
        self._order = order  # dataset indices grouped by identity
        self._starts = starts
        self._counts = counts
        self._num_samples = len(labels)
        super().__init__(_EpochStream(len(ids), num_identities, int(seed), rank, world_size), seed)

    def _fingerprint(self) -> dict[str, int]:
        return {
            "num_samples": self._num_samples,
            "num_ids": len(self.identities),
            "num_identities": self.num_identities,
            "num_instances": self.num_instances,
        }

    def _batch(self, step: int) -> np.ndarray:
        slots = self._stream.items(step)
        rng = np.random.default_rng([self.seed, _TAG_INSTANCES, step, self.rank])
        k = self.num_instances
        out = np.empty((len(slots), k), dtype=np.int64)
        for row, slot in enumerate(slots):
            n = int(self._counts[slot])
            picks = rng.choice(n, size=k, replace=n < k)
            out[row] = self._order[self._starts[slot] + picks]
        return out.reshape(-1)


class RandomBatchSampler(_CounterSampler):
    """Shuffled batches of ``batch_size`` indices drawn from ``indices`` (no repeats per epoch).

    Used by the classification methods (RSL reliable / soft-label samples, PUL).
    Same counter-based state and DDP sharding as :class:`PKSampler`.
    ``next_batch()`` returns (batch_size,) int64 entries of ``indices``.
    """

    _kind = "random"

    def __init__(
        self,
        indices: np.ndarray,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_rank(rank, world_size)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.indices = np.asarray(indices).astype(np.int64, copy=False).reshape(-1)
        needed = batch_size * world_size
        if len(self.indices) < needed:
            raise TrainingError(
                f"only {len(self.indices)} training samples selected, but a step needs "
                f"{batch_size} x {world_size} process(es) = {needed}: lower the batch size or "
                "select more samples (cluster.lambda_ / cluster.num_classes)"
            )
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        super().__init__(
            _EpochStream(len(self.indices), batch_size, int(seed), rank, world_size), seed
        )

    def _fingerprint(self) -> dict[str, int]:
        return {
            "num_samples": len(self.indices),
            "batch_size": self.batch_size,
        }

    def _batch(self, step: int) -> np.ndarray:
        return self.indices[self._stream.items(step)]


class ProxySampler(PKSampler):
    """P camera proxies x K images per batch (CAP's proxy-balanced sampling).

    A proxy is one pseudo-identity seen by one camera (:mod:`unreid.losses.camera_proxy`).
    Drawing proxies rather than identities gives every camera view of a person the
    same weight however many images it has, and puts several views of one identity in
    a batch now and then, which the inter-camera loss needs.

    Args:
        proxy_index: (N,) int proxy of every dataset index, -1 = not trained (outliers).
        num_proxies: P, proxies per batch on each rank.
        num_instances: K, images per proxy (with replacement when a proxy has fewer).
        seed, rank, world_size: as :class:`PKSampler`.

    Same state, resume and DDP behaviour as :class:`PKSampler`; its state names its
    kind, so a checkpoint of one sampler is refused by the other.
    """

    _kind = "proxy"

    def __init__(
        self,
        proxy_index: np.ndarray,
        num_proxies: int,
        num_instances: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        index = np.asarray(proxy_index).astype(np.int64, copy=False).reshape(-1)
        have = len(np.unique(index[index >= 0]))
        if have < num_proxies * world_size:
            raise TrainingError(
                f"only {have} camera proxies, but optim.num_identities={num_proxies} x "
                f"{world_size} process(es) proxies are needed per step: lower "
                "optim.num_identities, or check cluster.eps (too few clusters)"
            )
        super().__init__(index, num_proxies, num_instances, seed=seed, rank=rank,
                         world_size=world_size)
