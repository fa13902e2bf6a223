"""Data-parallel training on ``torch.distributed``: one process per device, started by
``torchrun`` (or ``ncf train --nproc N``, which starts the same thing).

Every rank holds the whole model. Each epoch, rank ``r`` of ``w`` trains on its shard of the
positives (:mod:`ncf.epochs`) with a local batch of ``batch_size / w``; after each step the
gradients are combined so that every rank applies the update of the global batch:

- dense gradients (tower, biases, dense embedding tables) are summed in one flat
  ``all_reduce``;
- row gradients of embedding tables (:class:`ncf.optim.RowGrad`, the rows a batch used) are
  ``all_gather``-ed: a rank's batch touches ``batch / w`` rows, far fewer bytes than a table.

Rank 0 alone evaluates (validation after every epoch, test at the end) and broadcasts what the
others need to stay in step (the validation metrics drive model selection, early stopping and
the learning-rate schedule). NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as tdist

from ncf.errors import NcfError
from ncf.optim import Grad, RowGrad

#: exit status of a rank that stopped because another rank failed (it prints nothing: the
#: failing rank has said why).
PEER_FAILED = 3


class PeerFailed(NcfError):
    """A collective failed because another rank stopped (that rank reports the cause)."""


def world_from_env() -> int:
    """The number of processes ``torchrun`` started (1 when not under ``torchrun``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise NcfError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run.

    Args:
        rank: global rank, ``0..world - 1``; rank 0 evaluates and writes.
        world: number of processes.
        local_rank: rank on this machine (selects the GPU).
        backend: ``"nccl"`` or ``"gloo"``.
        device: the device this rank trains on.
    """

    rank: int
    world: int
    local_rank: int
    backend: str
    device: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that evaluates, prints and writes the run directory."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world)``, the epoch shard of this rank."""
        return self.rank, self.world

    def _collective(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, ValueError) as exc:  # gloo / NCCL: a peer closed or timed out
            raise PeerFailed(f"rank {self.rank}: {what} failed, another rank stopped "
                             f"({str(exc).strip().splitlines()[0] if str(exc) else exc})"
                             ) from None

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` where the backend can reduce it (NCCL needs GPU tensors)."""
        return t.to(self.device) if self.backend == "nccl" else t

    def barrier(self) -> None:
        """Wait for every rank."""
        ids = [self.local_rank] if self.backend == "nccl" else None
        self._collective("barrier", tdist.barrier, device_ids=ids)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over ranks (a new tensor on ``t``'s device)."""
        buf = self._tensor(t.clone())
        self._collective("all_reduce", tdist.all_reduce, buf)
        return buf.to(t.device)

    def broadcast_floats(self, values: Sequence[float] | None, n: int) -> list[float]:
        """Rank 0's ``values`` (``n`` floats) on every rank."""
        buf = torch.zeros(n, dtype=torch.float64)
        if self.is_main:
            assert values is not None and len(values) == n
            buf[:] = torch.tensor(list(values), dtype=torch.float64)
        buf = self._tensor(buf)
        self._collective("broadcast", tdist.broadcast, buf, 0)
        return [float(v) for v in buf.cpu()]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Every rank takes rank 0's parameters and buffers (as DDP does at start)."""
        for t in list(module.parameters()) + list(module.buffers()):
            buf = self._tensor(t.data)
            self._collective("broadcast", tdist.broadcast, buf, 0)
            if buf is not t.data:
                t.data.copy_(buf)

    def sync_grads(self, grads: dict[str, Grad]) -> dict[str, Grad]:
        """The global batch's gradients from each rank's local ones (their mean over ranks).

        Each rank's loss is the mean over its local batch, and the local batches are equal,
        so the global mean is the mean of the ranks' gradients.
        """
        out: dict[str, Grad] = {}
        dense = [(n, g) for n, g in grads.items() if isinstance(g, torch.Tensor)]
        if dense:
            flat = torch.cat([g.reshape(-1) for _, g in dense])
            flat = self._tensor(flat)
            self._collective("all_reduce", tdist.all_reduce, flat)
            flat = flat.to(dense[0][1].device).div_(self.world)
            offset = 0
            for n, g in dense:
                out[n] = flat[offset : offset + g.numel()].view_as(g)
                offset += g.numel()
        gathered: dict[int, torch.Tensor] = {}  # tables sharing an index share its gather
        for n, rg in grads.items():
            if isinstance(rg, torch.Tensor):
                continue
            if id(rg.index) not in gathered:
                gathered[id(rg.index)] = self._gather(rg.index)
            values = self._gather(rg.values).div_(self.world)
            out[n] = RowGrad(gathered[id(rg.index)], values)
        return {n: out[n] for n in grads}

    def gather_text(self, text: str) -> list[str]:
        """Every rank's ``text``, in rank order, on every rank (checkpoints gather each
        rank's generator states this way)."""
        data = torch.tensor(list(text.encode()), dtype=torch.uint8)
        sizes = self._gather(torch.tensor([len(data)], dtype=torch.int64)).tolist()
        padded = torch.zeros(max(*sizes, 1), dtype=torch.uint8)
        padded[: len(data)] = data
        parts = self._gather(padded).view(self.world, -1)
        return [bytes(parts[r, : sizes[r]].tolist()).decode() for r in range(self.world)]

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(self._tensor(t)) for _ in range(self.world)]
        self._collective("all_gather", tdist.all_gather, parts, self._tensor(t.contiguous()))
        return torch.cat(parts).to(t.device)


def init_from_env(device: str) -> Distributed | None:
    """Join the process group ``torchrun`` described in the environment, or ``None`` when
    this process runs alone.

    ``device`` is ``"cpu"`` or ``"cuda"``: on CUDA each rank takes GPU ``LOCAL_RANK`` and
    NCCL; on the CPU gloo.
    """
    world = world_from_env()
    if world <= 1:
        return None
    env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    missing = [k for k, v in env.items() if v is None]
    if missing:
        raise NcfError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: start distributed "
                       "runs with torchrun or ncf train --nproc N")
    rank, local_rank = int(env["RANK"] or 0), int(env["LOCAL_RANK"] or 0)
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise NcfError(f"rank {rank}: LOCAL_RANK {local_rank} but only "
                           f"{torch.cuda.device_count()} GPU(s) on this machine")
        torch.cuda.set_device(local_rank)
        backend, dev = "nccl", f"cuda:{local_rank}"
    else:
        backend, dev = "gloo", "cpu"
    if not tdist.is_initialized():
        try:
            tdist.init_process_group(backend, timeout=timedelta(minutes=30))
        except (RuntimeError, ValueError) as exc:
            raise NcfError(f"rank {rank}: could not join the process group "
                           f"({str(exc).strip().splitlines()[0]})") from None
    return Distributed(rank=tdist.get_rank(), world=tdist.get_world_size(),
                       local_rank=local_rank, backend=backend, device=dev)


def shutdown() -> None:
    """Leave the process group (every rank, at the end of a run)."""
    if tdist.is_initialized():
        tdist.destroy_process_group()


#: set by :func:`launch` for the processes it starts: they leave the last word to it.
LAUNCHED_ENV = "NCF_LAUNCHED"


def launched() -> bool:
    """Whether this process was started by :func:`launch` (``ncf train --nproc``)."""
    return os.environ.get(LAUNCHED_ENV) == "1" and world_from_env() > 1


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m ncf ARGV`` in ``nproc`` processes on this machine, as
    ``torchrun --standalone --nproc_per_node NPROC -m ncf ARGV`` would, and end with one line.

    A rank that fails prints its own one-line error and the launcher stops the others (they
    stop quietly); a rank killed by a signal is named here. Returns the exit status of the
    rank that failed first (0 when all succeeded).
    """
    import logging
    import signal
    import sys

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import config_from_args, get_args_parser

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each rank sets its own torch threads
    os.environ[LAUNCHED_ENV] = "1"
    args = get_args_parser().parse_args(
        ["--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc), "--max-restarts", "0",
         "--module", "ncf", *argv])
    args.rdzv_backend, args.rdzv_endpoint = "c10d", "127.0.0.1:0"
    import uuid

    args.rdzv_id = str(uuid.uuid4())
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the agent's own reports would repeat the ranks' lines
    try:
        from torch.distributed.launcher.api import elastic_launch

        config, cmd, cmd_args = config_from_args(args)
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
        return 0
    except (KeyboardInterrupt, SignalException):
        print("ncf: interrupted", file=sys.stderr)
        return 130
    except ChildFailedError as exc:
        failures = exc.failures
        # the agent stops the other ranks with SIGTERM: they are not the cause
        stopped = (PEER_FAILED, 130, 128 + signal.SIGTERM, -signal.SIGTERM)
        causes = {r: f for r, f in failures.items() if f.exitcode not in stopped}
        rank = min(causes or failures, key=lambda r: (failures[r].timestamp, r))
        failure = failures[rank]
        if failure.exitcode < 0:
            name = failure.signal_name()
            hint = " (out of memory?)" if failure.exitcode == -signal.SIGKILL else ""
            print(f"ncf: error: rank {rank} of {nproc} was killed by {name}{hint}; the run was "
                  "stopped", file=sys.stderr)
            return 128 - failure.exitcode
        if failure.exitcode == 130:
            print("ncf: interrupted", file=sys.stderr)
        elif failure.exitcode == PEER_FAILED:
            print(f"ncf: error: rank {rank} of {nproc} lost contact with the other ranks; the "
                  "run was stopped", file=sys.stderr)
        elif failure.exitcode != 2:  # 2: the rank printed its one-line error
            print(f"ncf: error: rank {rank} of {nproc} failed with exit status "
                  f"{failure.exitcode}; the run was stopped", file=sys.stderr)
        return failure.exitcode
    finally:
        quiet.setLevel(level)
        os.environ.pop(LAUNCHED_ENV, None)
