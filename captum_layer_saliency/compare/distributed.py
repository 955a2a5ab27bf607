"""``torch.distributed`` glue for ``torchrun --nproc_per_node N -m captum_layer_saliency compare``.

torchrun starts one process per rank and tells each who it is through ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``. Each process:

1. puts its model on ``cuda:LOCAL_RANK`` when CUDA is available (NCCL backend), else on the CPU
   (gloo backend) -- :func:`rank_device`;
2. runs its shard of the batch plan with
   :func:`~captum_layer_saliency.compare.runner.run_comparison` (``shard=(rank, world)``),
   appending to its own ``rows.rank{r}.jsonl``, which makes resume per shard;
3. meets the others in :meth:`ProcessGroup.all_ok`, which is both the barrier and the way a
   failure on one rank reaches every other rank (so no rank waits forever on a dead peer);
4. rank 0 alone merges the shards and writes the report.

The shards are the runner's: batch ``b`` goes to rank ``b % world`` (see the runner's docstring
for why this beats splitting the dataset). The row files are the only channel between ranks, so
for several nodes ``--out`` must be on a file system they all share; :func:`check_shards_visible`
says so clearly when it is not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from captum_layer_saliency.compare import results
from captum_layer_saliency.errors import CaptumLayerSaliencyError

#: The environment torchrun (``torch.distributed.run``) sets for every worker.
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: How long a collective waits for the slowest rank. The final one waits for every shard to
#: finish, so it must outlast the longest shard; a rank that dies is noticed sooner, through its
#: closed connection.
DEFAULT_TIMEOUT = timedelta(hours=24)


class DistributedSetupError(CaptumLayerSaliencyError, RuntimeError):
    """The torchrun environment is inconsistent, or the ranks cannot see each other's files."""


@dataclass(frozen=True)
class RankInfo:
    """Who this process is in a torchrun job.

    Attributes:
        rank: the global rank, ``0 <= rank < world_size``.
        world_size: the number of processes over all nodes.
        local_rank: the rank on this node (which GPU to use).
    """

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that merges, reports and prints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)``, as :func:`run_comparison` takes it."""
        return self.rank, self.world_size


def torchrun_rank(environ: Mapping[str, str] | None = None) -> RankInfo | None:
    """This process's place in a torchrun job, or ``None`` when it was not started by torchrun.

    Args:
        environ: the environment (default ``os.environ``).

    Returns:
        The :class:`RankInfo`, or ``None`` without ``RANK`` and ``WORLD_SIZE``.

    Raises:
        DistributedSetupError: the variables are not integers or are out of range.
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", env["RANK"]))
    except ValueError:
        values = {k: env.get(k) for k in ENV_KEYS}
        raise DistributedSetupError(f"torchrun variables are not integers: {values}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedSetupError(
            f"inconsistent torchrun variables RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}"
        )
    return RankInfo(rank, world, local)


def rank_device(info: RankInfo, requested: str = "auto") -> torch.device:
    """The device of a rank: ``cuda:LOCAL_RANK`` when CUDA is wanted and present, else the CPU.

    Args:
        info: the rank.
        requested: ``"auto"`` (CUDA when available), ``"cuda"`` (required) or ``"cpu"``.

    Returns:
        The device.

    Raises:
        DistributedSetupError: CUDA is required but absent, or this node runs more ranks than it
            has GPUs (two ranks sharing a GPU would each hold a full model).
    """
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedSetupError("--device cuda was asked for, but CUDA is not available")
    count = torch.cuda.device_count()
    if info.local_rank >= count:
        raise DistributedSetupError(
            f"local rank {info.local_rank} has no GPU: this node has {count}; start at most "
            f"{count} processes per node (--nproc_per_node {count})"
        )
    return torch.device("cuda", info.local_rank)


class ProcessGroup:
    """The initialised default process group of one rank (see :func:`process_group`)."""

    def __init__(self, info: RankInfo, device: torch.device) -> None:
        """Wrap the group of rank ``info`` on ``device`` (made by :func:`process_group`)."""
        self.info = info
        self.device = device

    def all_ok(self, ok: bool) -> bool:
        """Tell every rank whether this one succeeded; return whether all did.

        Every rank must call it, also after a failure: it is the barrier that ends the run, and
        it carries the failure to the ranks that would otherwise wait for the failed one.

        Args:
            ok: whether this rank finished its shard.

        Returns:
            ``True`` when every rank passed ``ok=True``.
        """
        # NCCL reduces only CUDA tensors; gloo takes CPU ones. One value, one sync, at the end.
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        result = bool(flag.item())
        self._quiesce()
        return result

    def _quiesce(self, timeout_s: float = 600.0) -> None:
        """Wait, through the rendezvous store, until every rank has finished the last collective.

        A rank that returns from ``all_reduce`` may tear its connections down while a slower
        peer is still reading its last message; the peer's transport thread then gets a reset
        connection and aborts the process (SIGABRT, seen with gloo on a loaded machine). The
        store outlives the ranks (torchrun's agent holds it), so meeting there first makes
        the teardown safe. Without a store (another launcher), this is skipped.
        """
        try:
            store = dist.distributed_c10d._get_default_store()
        except (AttributeError, RuntimeError, ValueError):
            return
        key = "captum_layer_saliency/all_ok_done"
        store.add(key, 1)
        deadline = time.monotonic() + timeout_s
        while store.add(key, 0) < self.info.world_size:
            if time.monotonic() > deadline:
                return  # the collective itself succeeded: a late peer is not an error here
            time.sleep(0.02)


@contextmanager
def process_group(
    info: RankInfo, device: torch.device, timeout: timedelta = DEFAULT_TIMEOUT
) -> Iterator[ProcessGroup]:
    """Initialise the default process group for this rank, and always destroy it.

    Args:
        info: the rank (torchrun's ``MASTER_ADDR``/``MASTER_PORT`` give the rendezvous).
        device: the rank's device; CUDA selects the NCCL backend, the CPU gloo.
        timeout: how long a collective may wait.

    Yields:
        The :class:`ProcessGroup`.
    """
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend, rank=info.rank, world_size=info.world_size, timeout=timeout
    )
    try:
        yield ProcessGroup(info, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def check_shards_visible(out_dir: str | os.PathLike[str], world_size: int) -> None:
    """Check that rank 0 sees every rank's rows file before merging them.

    Every rank creates its file when it starts (even with no batches to do), so a missing one
    means the ranks did not write to the same directory: nodes without a shared file system.

    Args:
        out_dir: the comparison directory.
        world_size: the number of ranks.

    Raises:
        DistributedSetupError: a rank's file is missing.
    """
    missing = [r for r in range(world_size) if not results.rows_path(Path(out_dir), r).is_file()]
    if missing:
        raise DistributedSetupError(
            f"rank 0 cannot see the rows of rank(s) {missing} in {out_dir}: --out must be on a "
            "file system shared by every node. The shards are kept where they were written; "
            "copy every rows.rank*.jsonl into one directory (with run.json) and run "
            "`python -m captum_layer_saliency merge --out DIR`"
        )
