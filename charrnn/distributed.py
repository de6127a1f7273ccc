"""Data-parallel training over several processes: `torch.distributed` and DistributedDataParallel,
launched by `torchrun`. This module owns the process group, the rank helpers and the reductions.

charrnn joins a process group only when torchrun launched it (RANK, WORLD_SIZE and LOCAL_RANK are
in the environment, even for a world of one). Otherwise `World()` is a world of one process whose
methods are all the identity, so single-process training runs exactly the code it always did.

- Backend: NCCL on CUDA, each process on cuda:LOCAL_RANK; gloo on the CPU. Gradients go through
  DDP on the main (default) group. The small values the ranks must agree on (the clock, stop
  requests, losses to log, RNG states, the carried hidden state for a checkpoint) go through a
  second group, gloo on the CPU, so they never wait on a GPU stream. It is a group of its own even
  when the main backend is gloo too: DDP keeps its group alive past `destroy_process_group` (its
  worker threads run until the process exits), and a gloo worker that lets go of a finished
  gather's tensors while the interpreter shuts down aborts the process ("terminate called without
  an active exception"). The side group holds every collective of ours and is freed in `close`,
  which joins its threads while Python is still up.
- Data: the global batch of B streams is the single-process layout; rank r owns the contiguous
  rows [r*B/W, (r+1)*B/W) of it (`rows`).
- Failures: a collective that fails because another rank died, or did not answer within the
  process-group timeout, becomes a one-line `DistributedError` (`guard`), and the process group is
  torn down before exit, so no rank hangs and none aborts with a C++ trace. A rank that is failing
  ignores the SIGTERM torchrun sends when it sees another rank die, so its message is printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .errors import CharrnnError, DistributedError, one_line

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
RESTART_VAR = "TORCHELASTIC_RESTART_COUNT"  # torchrun counts the restarts of the worker group
# What a collective says when the other side has gone away (gloo's TCP transport, NCCL, timeouts).
_COMM_FAILURE_SIGNS = ("connection reset", "connection closed", "connection refused", "broken pipe",
                       "timed out", "timeout", "nccl", "gloo/transport", "socket")


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARS)


@dataclass
class World:
    """This process's place among the training processes; a world of one unless torchrun launched it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart_count: int = 0  # torchrun --max-restarts: how many times the worker group was restarted
    launched: bool = False  # a process group is up and the model trains under DDP
    group: Any = None  # the gloo group for our CPU-side collectives (DDP uses the default group)
    stop_asked: bool = False  # a SIGTERM came before training started (see `guard`)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, logs metrics and writes the run folder."""
        return self.rank == 0

    # --- data layout --------------------------------------------------------------------------
    def rows(self, batch_size: int, grad_accum: int = 1) -> range:
        """The rows of a global batch of `batch_size` streams that this rank owns."""
        w = self.world_size
        if batch_size % w:
            raise CharrnnError(f"batch-size {batch_size} does not split evenly over {w} processes: "
                               f"use a multiple of {w}")
        share = batch_size // w
        if share % grad_accum:
            raise CharrnnError(f"batch-size {batch_size} over {w} process(es) is {share} streams each, which "
                               f"--grad-accum {grad_accum} cannot split evenly: use a multiple of {w * grad_accum}")
        return range(self.rank * share, (self.rank + 1) * share)

    # --- the model ----------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DDP around the model when launched (it averages gradients across ranks in backward)."""
        if not self.launched:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    @staticmethod
    def no_sync(net: torch.nn.Module):
        """Accumulate gradients locally, without DDP's all-reduce (all micro-batches but the last)."""
        return net.no_sync() if isinstance(net, DistributedDataParallel) else contextlib.nullcontext()

    # --- reductions (CPU, gloo); the identity in a world of one ---------------------------------
    def all_sum(self, values: list[float]) -> list[float]:
        if not self.launched:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t.tolist()

    def mean(self, value: float) -> float:
        return self.all_sum([value])[0] / self.world_size if self.launched else value

    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """One clock and one stop decision for all ranks: the latest clock, and stop if any rank asks.

        The learning rate and the time budget follow the clock, so every rank must read the same one.
        """
        if not self.launched:
            return elapsed, stop
        t = torch.tensor([elapsed, float(stop)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t[0].item(), bool(t[1].item())

    def gather_rows(self, tensors: tuple[torch.Tensor, ...], dim: int) -> tuple[torch.Tensor, ...]:
        """Every rank's slice of a batch-shaped state, joined on `dim` in rank order: the global one."""
        if not self.launched:
            return tensors
        out = []
        for t in tensors:
            t = t.detach().cpu().contiguous()
            parts = [torch.empty_like(t) for _ in range(self.world_size)]
            dist.all_gather(parts, t, group=self.group)
            out.append(torch.cat(parts, dim))
        return tuple(out)

    def gather(self, obj: Any) -> list[Any]:
        """One picklable object from each rank, in rank order."""
        if not self.launched:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank: for a choice that only rank 0 makes."""
        if not self.launched:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        if self.launched:
            dist.barrier(group=self.group)

    @contextlib.contextmanager
    def main_first(self):
        """Local rank 0 of each node runs the block first (e.g. writing a cache), then the others."""
        if self.launched and self.local_rank != 0:
            self.barrier()
        yield
        if self.launched and self.local_rank == 0:
            self.barrier()

    # --- failure ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self):
        """Turn a collective that failed because of another rank into one clear line.

        A launched rank never dies of SIGTERM while it sets up or trains: torchrun sends it to every
        rank as soon as it sees one die, often while this rank is still on its way to the collective
        that will fail and say so. Before training a SIGTERM is remembered (`stop_asked`: the trainer
        then stops after its first step, saving); during training the trainer handles it; after a
        failure it is ignored, since this rank's own exit, with its message, follows shortly.
        """
        main = self.launched and threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._remember_sigterm) if main else None
        try:
            yield
        except BaseException as e:
            if self.launched and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if isinstance(e, CharrnnError) or not isinstance(e, Exception):
                raise
            if not self.launched or not is_comm_failure(e):
                raise
            # gloo says "[path/pair.cc:553] Connection closed by peer [addr]. This is typically...": keep the gist
            why = re.sub(r"^\[[^\]]*\]\s*", "", (str(e).strip().splitlines() or [""])[0]).split(". ")[0]
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: lost contact with another rank, which failed, was killed "
                f"or did not answer within --dist-timeout (see its output) [{one_line(why, 100) or type(e).__name__}]. "
                f"Resume from last.pt with --resume, or launch with torchrun --max-restarts=N to resume automatically"
            ) from None
        if main:
            signal.signal(signal.SIGTERM, previous)

    def _remember_sigterm(self, signum, frame) -> None:
        self.stop_asked = True

    def close(self) -> None:
        """Leave the process group; after a failure this is what lets the process exit cleanly."""
        if self.launched and dist.is_initialized():
            dist.destroy_process_group()
        self.launched, self.group = False, None  # our reference was the side group's last one


def is_comm_failure(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e).lower() for s in _COMM_FAILURE_SIGNS)


def _attempt_store(world_size: int, restarts: int, timeout: timedelta) -> dist.Store:
    """The rendezvous store for this attempt of the worker group.

    torchrun's agent hosts one TCPStore for the whole job (TORCHELASTIC_USE_AGENT_STORE) and keeps it
    across --max-restarts, so a restarted worker could read the previous attempt's addresses and
    fail to connect (pytorch/pytorch#135712). Keys under a per-attempt prefix cannot go stale.
    """
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
                          and int(os.environ["RANK"]) == 0, timeout=timeout)
    return dist.PrefixStore(f"charrnn/attempt_{restarts}/", store)


def init(device: torch.device, timeout: float = 600.0) -> tuple[World, torch.device]:
    """Join torchrun's process group if torchrun launched us; returns the world and this rank's device."""
    if not launched_by_torchrun():
        return World(), device
    rank, world_size, local_rank = (int(os.environ[v]) for v in TORCHRUN_VARS)
    restarts = int(os.environ.get(RESTART_VAR, "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise CharrnnError(f"rank {rank}: LOCAL_RANK {local_rank} but this node has "
                               f"{torch.cuda.device_count()} CUDA device(s): lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise CharrnnError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not {device.type}")
    span = timedelta(seconds=timeout)
    try:
        dist.init_process_group(backend, store=_attempt_store(world_size, restarts, span), rank=rank,
                                world_size=world_size, timeout=span, device_id=device if backend == "nccl" else None)
        group = dist.new_group(backend="gloo", timeout=span)  # see the module docstring
    except Exception as e:
        raise DistributedError(f"rank {rank}: cannot join the process group ({one_line(e, 160)})") from None
    return World(rank, world_size, local_rank, restarts, launched=True, group=group), device
