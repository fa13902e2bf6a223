"""One epoch of training samples: every positive once, fresh negatives, shuffled.

An epoch is built as whole tensors (positives, ``n_negatives`` sampled negatives per positive,
one permutation) and cut into batches by slicing: no ``DataLoader``, no per-sample Python. Two
builders produce the same distribution:

- :func:`iter_epoch` on the host (numpy negatives, :class:`ncf.sampling.KeySet`), the CPU path;
- :class:`DeviceEpochs` on the model's torch device (a GPU): negatives drawn with ``torch``'s
  generator, checked against a membership bitset held on the device, shuffled with
  ``randperm`` there. Nothing crosses to the host but a handful of counts per block.

Both are exact (a negative is never one of its user's positives) and seeded. For data-parallel
training (:mod:`ncf.distributed`) each rank takes its shard of every epoch: the positives are
permuted with a generator every rank seeds alike, rank ``r`` of ``w`` keeps slice ``r`` of
``n // w`` of them (the ``n mod w`` left over change with every epoch's permutation) and draws
their negatives from its own generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ncf.checkpoints import (
    generator_state,
    numpy_state,
    set_generator_state,
    set_numpy_state,
)
from ncf.errors import NcfError
from ncf.sampling import MAX_BITSET_BYTES, KeySet, sample_negatives

#: positives per block of an epoch; at 100M positives an epoch is built block by block.
EPOCH_BLOCK = 4_000_000

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Shard = tuple[int, int]


def shard_size(n: int, shard: Shard | None) -> int:
    """Positives a rank trains on per epoch: all of them, or ``n // world`` of a shard."""
    if shard is None:
        return n
    rank, world = shard
    if not 0 <= rank < world:
        raise NcfError(f"rank {rank} outside 0..{world - 1}")
    if n < world:
        raise NcfError(f"{n} training positives cannot be shared among {world} processes")
    return n // world


def iter_epoch(
    users: np.ndarray,
    items: np.ndarray,
    keys: KeySet,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    block: int = EPOCH_BLOCK,
    shard: Shard | None = None,
    shard_rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """One epoch as shuffled blocks, built on the host: every positive once, ``n_negatives``
    fresh negatives each.

    The positives are permuted globally, then cut into blocks of ``block`` positives; each
    block gets its negatives and is shuffled with them. With fewer positives than ``block``
    (every data set short of Netflix scale) this is one global shuffle; at 100M it keeps the
    epoch's memory to a few blocks instead of 500M samples at once.

    ``shard=(rank, world)`` keeps rank ``rank``'s slice of a permutation drawn from
    ``shard_rng`` (seeded alike on every rank); ``rng`` then draws this rank's negatives.

    Yields:
        ``(users, items, labels)`` int64 / int64 / float32 tensors of
        ``len(block) * (1 + n_negatives)`` samples.
    """
    n = len(users)
    if shard is not None:
        if shard_rng is None:
            raise NcfError("a sharded epoch needs the generator every rank shares")
        m = shard_size(n, shard)
        order: np.ndarray | None = shard_rng.permutation(n)[shard[0] * m : (shard[0] + 1) * m]
        n = m
    else:
        order = rng.permutation(n) if n > block else None
    for start in range(0, n, block):
        if order is None:
            u, i = users, items
        else:
            idx = order[start : start + block]
            u, i = users[idx], items[idx]
        m = len(u)
        negs = sample_negatives(u, keys, n_items, n_negatives, rng)
        all_users = np.empty(m * (1 + n_negatives), dtype=np.int64)
        all_items = np.empty_like(all_users)
        all_users[:m], all_items[:m] = u, i
        all_users[m:] = np.repeat(u, n_negatives)
        all_items[m:] = negs
        labels = torch.zeros(len(all_users), dtype=torch.float32)
        labels[:m] = 1.0
        perm = torch.randperm(len(all_users), generator=generator)
        yield (torch.from_numpy(all_users)[perm].to(device),
               torch.from_numpy(all_items)[perm].to(device), labels[perm].to(device))


def build_epoch(
    users: np.ndarray,
    items: np.ndarray,
    keys: KeySet,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    device: str = "cpu",
) -> Batch:
    """A whole epoch at once (see :func:`iter_epoch`); for data that fit in one block."""
    parts = list(iter_epoch(users, items, keys, n_items, n_negatives, rng, generator, device,
                            block=max(len(users), 1)))
    return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]


class HostEpochs:
    """Epochs built on the host (:func:`iter_epoch`) with their own seeded generators: numpy
    for negatives (and the shared permutation of a shard), torch for the shuffles.

    Args:
        users, items: the training positives (int64 arrays, shape ``(n,)``).
        keys: their key set (:meth:`ncf.interactions.Interactions.keys`).
        n_items: number of items.
        n_negatives: negatives per positive.
        device: where the epoch tensors go.
        seed: seeds the generators (per rank when sharded).
        block: positives per block.
        shard: ``(rank, world)`` for data-parallel training, else ``None``.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, keys: KeySet, n_items: int,
                 n_negatives: int, device: str | torch.device, seed: int,
                 block: int = EPOCH_BLOCK, shard: Shard | None = None) -> None:
        self.users, self.items, self.keys, self.n_items = users, items, keys, n_items
        self.n_negatives, self.device, self.block, self.shard = n_negatives, device, block, shard
        self.rng = np.random.default_rng(seed if shard is None else [seed, shard[0]])
        self.shard_rng = None if shard is None else np.random.default_rng([seed, 1 << 30])
        self.generator = torch.Generator().manual_seed(seed if shard is None else seed + shard[0])
        self.samples = shard_size(len(users), shard) * (1 + n_negatives)

    def __iter__(self) -> Iterator[Batch]:
        return iter_epoch(self.users, self.items, self.keys, self.n_items, self.n_negatives,
                          self.rng, self.generator, self.device, block=self.block,
                          shard=self.shard, shard_rng=self.shard_rng)

    def state(self) -> dict[str, Any]:
        """The generators' state (what makes the next epochs what they would have been)."""
        return {"rng": numpy_state(self.rng), "shard_rng": numpy_state(self.shard_rng),
                "generator": generator_state(self.generator)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the generators from :meth:`state`."""
        set_numpy_state(self.rng, state["rng"])
        set_numpy_state(self.shard_rng, state["shard_rng"])
        set_generator_state(self.generator, state["generator"])


class TorchKeySet:
    """Membership of keys ``user * n_items + item`` tested on a torch device.

    The same sets as :class:`ncf.sampling.KeySet`: a bitset of ``n_users * n_items`` bits when
    it fits in ``max_bitset_bytes`` (Netflix: 1.07 GB), else the sorted keys and
    ``torch.searchsorted``. The sorted keys are also kept for :meth:`exact_free`, the draw of
    users who rated nearly every item.

    Args:
        keys: sorted unique int64 keys, a tensor on the device where lookups run.
        n_items: number of items in the key space.
        max_bitset_bytes: largest bitset built on the device.
    """

    def __init__(self, keys: torch.Tensor, n_items: int,
                 max_bitset_bytes: int = MAX_BITSET_BYTES) -> None:
        if n_items <= 0:
            raise NcfError(f"n_items must be positive, got {n_items}")
        self.n_items = int(n_items)
        self.keys = keys.to(torch.int64)
        self.device = keys.device
        self.n_bits = (int(keys[-1]) // n_items + 1) * n_items if len(keys) else 0
        self.bits: torch.Tensor | None = None
        if len(keys) and (self.n_bits + 7) // 8 <= max_bitset_bytes:
            self.bits = torch.zeros((self.n_bits + 7) // 8, dtype=torch.uint8, device=self.device)
            flags = torch.bitwise_left_shift(torch.ones((), dtype=torch.uint8, device=self.device),
                                             (self.keys & 7).to(torch.uint8))
            # unique keys: the bits of one byte are distinct, so their sum is their OR
            self.bits.index_add_(0, self.keys >> 3, flags)

    @classmethod
    def of_pairs(cls, users: torch.Tensor, items: torch.Tensor, n_items: int,
                 max_bitset_bytes: int = MAX_BITSET_BYTES) -> TorchKeySet:
        """The set of ``(users, items)`` pairs, keyed and sorted where the tensors are (on a GPU
        a sort of 100M keys takes milliseconds, against seconds for numpy on the host)."""
        keys = torch.unique(users.to(torch.int64) * n_items + items.to(torch.int64))
        return cls(keys, n_items, max_bitset_bytes)

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, query: torch.Tensor) -> torch.Tensor:
        """Membership of each non-negative int64 key of ``query``: bool, same shape."""
        if not len(self.keys):
            return torch.zeros(query.shape, dtype=torch.bool, device=query.device)
        if self.bits is not None:
            inside = query < self.n_bits
            safe = torch.where(inside, query, 0)
            byte = self.bits[safe >> 3]
            return (torch.bitwise_right_shift(byte, (safe & 7).to(torch.uint8)) & 1).bool() & inside
        pos = torch.searchsorted(self.keys, query).clamp_(max=len(self.keys) - 1)
        return self.keys[pos] == query

    def exact_free(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One uniform item outside the set for each entry of ``users``, without rejection.

        The r-th free item of a user with sorted positives ``p`` is ``r + #{i: p_i - i <= r}``,
        answered for every entry by one ``searchsorted`` (as :func:`ncf.sampling._exact_free`).
        """
        n = self.n_items
        uniq, inv = torch.unique(users, return_inverse=True)
        lo = torch.searchsorted(self.keys, uniq * n)
        cnt = torch.searchsorted(self.keys, (uniq + 1) * n) - lo
        free = n - cnt
        if bool((free <= 0).any()):
            bad = int(uniq[int(torch.argmax((free <= 0).to(torch.int8)))])
            raise NcfError(f"user {bad} interacted with all {n} items: no negative to sample")
        r = torch.rand(len(users), generator=generator, device=users.device, dtype=torch.float64)
        r = torch.minimum((r * free[inv]).long(), free[inv] - 1)
        offsets = torch.zeros(len(uniq) + 1, dtype=torch.int64, device=users.device)
        torch.cumsum(cnt, 0, out=offsets[1:])
        seg = torch.repeat_interleave(torch.arange(len(uniq), device=users.device), cnt)
        rank_in_seg = torch.arange(len(seg), device=users.device) - offsets[seg]
        items = self.keys[lo[seg] + rank_in_seg] - uniq[seg] * n
        stride = n + 1
        below = seg * stride + items - rank_in_seg
        return r + torch.searchsorted(below, inv * stride + r, right=True) - offsets[inv]


def sample_negatives_torch(
    users: torch.Tensor,
    keys: TorchKeySet,
    n_negatives: int,
    generator: torch.Generator,
    max_rounds: int = 16,
) -> torch.Tensor:
    """Training negatives on the keys' device: ``n_negatives`` uniform items per entry, never a
    positive of its user, laid out like ``users.repeat_interleave(n_negatives)``.

    One draw for every entry, redraws of the hits only (a few rounds, each one host
    synchronisation to learn how many are left), then exact draws for the rare entries still
    left (users who rated nearly every item).
    """
    return draw_free(users.repeat_interleave(n_negatives), keys, generator, max_rounds)


def draw_free(
    rep: torch.Tensor, keys: TorchKeySet, generator: torch.Generator, max_rounds: int = 16
) -> torch.Tensor:
    """One uniform item per entry of ``rep`` (users), never one of its user's positives."""
    n = keys.n_items
    items = torch.randint(0, n, rep.shape, generator=generator, device=rep.device)
    todo = torch.nonzero(keys.contains(rep * n + items)).squeeze(1)
    for _ in range(max_rounds):
        if not len(todo):
            return items
        items[todo] = torch.randint(0, n, todo.shape, generator=generator, device=rep.device)
        todo = todo[keys.contains(rep[todo] * n + items[todo])]
    if len(todo):
        items[todo] = keys.exact_free(rep[todo], generator)
    return items


class DeviceEpochs:
    """Epochs built where the model trains (a GPU): the training positives, their membership
    bitset and the epoch's samples stay on ``device``.

    Args:
        users, items: the training positives (int arrays, shape ``(n,)``).
        n_items: number of items (negatives are drawn from ``0..n_items-1``).
        n_negatives: negatives per positive.
        device: the torch device.
        seed: seeds the device generator of negatives and shuffles (per rank when sharded).
        block: positives per block (bounds the epoch's memory on the device).
        shard: ``(rank, world)`` for data-parallel training, else ``None``.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, n_negatives: int,
                 device: str | torch.device, seed: int, block: int = EPOCH_BLOCK,
                 shard: Shard | None = None) -> None:
        self.device = torch.device(device)
        self.users = torch.from_numpy(np.ascontiguousarray(users, dtype=np.int64)).to(self.device)
        self.items = torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64)).to(self.device)
        self.keys = TorchKeySet.of_pairs(self.users, self.items, n_items)
        self.n_negatives, self.block, self.shard = n_negatives, block, shard
        self.n = shard_size(len(self.users), shard)
        rank = 0 if shard is None else shard[0]
        self.generator = torch.Generator(device=self.device).manual_seed(seed * 1009 + rank)
        self.shard_generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def samples(self) -> int:
        """Samples of one epoch (of this rank's shard)."""
        return self.n * (1 + self.n_negatives)

    def state(self) -> dict[str, Any]:
        """The device generators' state (``torch.Generator.get_state`` works on CUDA too)."""
        return {"generator": generator_state(self.generator),
                "shard_generator": generator_state(self.shard_generator)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the generators from :meth:`state`."""
        set_generator_state(self.generator, state["generator"])
        set_generator_state(self.shard_generator, state["shard_generator"])

    def __iter__(self) -> Iterator[Batch]:
        """One epoch as shuffled blocks: ``(users, items, labels)`` on the device."""
        total = len(self.users)
        order: torch.Tensor | None = None
        if self.shard is not None:
            rank = self.shard[0]
            perm = torch.randperm(total, generator=self.shard_generator, device=self.device)
            order = perm[rank * self.n : (rank + 1) * self.n]
        elif total > self.block:
            order = torch.randperm(total, generator=self.generator, device=self.device)
        k = self.n_negatives
        for start in range(0, self.n, self.block):
            if order is None:
                u, i = self.users, self.items
            else:
                idx = order[start : start + self.block]
                u, i = self.users[idx], self.items[idx]
            m = len(u)
            rep = u.repeat_interleave(k)
            all_users = torch.cat([u, rep])
            all_items = torch.cat([i, draw_free(rep, self.keys, self.generator)])
            perm = torch.randperm(m * (1 + k), generator=self.generator, device=self.device)
            yield all_users[perm], all_items[perm], (perm < m).to(torch.float32)
