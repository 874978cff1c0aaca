"""Data-parallel training on torch.distributed: the views of each step split across processes.

Every process holds the whole scene and the same model. A step's ``views_per_step`` views are split into equal
contiguous shares, one per rank; each rank renders its share and back-propagates its part of the step's mean
loss, then the gradients are summed over the ranks (one all-reduce of one flat buffer) and the densification
statistics of every view gathered, so each rank applies the same Adam step and takes the same densification
decisions with the same random streams: the models stay identical without being sent again. Rank 0 alone loads
the data, writes the run folder and checkpoints, evaluates and exports; it hands the other ranks what they train
on (``share``/``follow``). gloo on the CPU, NCCL on GPUs.

``sparsesplat reconstruct ... --nproc N`` starts the N processes on this machine (``launch``); under ``torchrun``
the processes exist already and join through the environment (``from_environment``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """Data-parallel training could not start or lost a process."""


@dataclass
class DataParallel:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, views_per_step: int) -> range:
        """The step's view slots this rank renders (contiguous, equal shares)."""
        check_split(views_per_step, self.world_size)
        per = views_per_step // self.world_size
        return range(self.rank * per, (self.rank + 1) * per)

    # -- collective operations (every rank calls them in the same order) ---------------------------------------

    def sum_gradients(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor's ``.grad`` by its sum over the ranks (a missing grad counts as zeros)."""
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        k = 0
        for t, g in zip(tensors, grads):
            n = g.numel()
            t.grad = flat[k:k + n].view_as(t).clone()
            k += n

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's ``tensor`` (same shape on every rank) along dim 0, in rank order."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def sum_scalars(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj=None):
        """Rank 0's ``obj`` on every rank (pickled)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def check_split(views_per_step: int, world: int) -> None:
    """Each process renders an equal share of a step's views."""
    if views_per_step % world:
        raise ValueError(f"--views-per-step {views_per_step} does not split evenly over {world} processes: make it "
                         "a multiple of the process count")


def from_environment() -> Optional[DataParallel]:
    """Join the process group described by torchrun's environment (WORLD_SIZE > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        _init_group(rank, world)
    return DataParallel(rank, world)


def _init_group(rank: int, world: int) -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    try:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=30))
    except Exception as e:  # a port in use, an address nobody answers at
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise DistributedError(f"rank {rank} could not join the process group at {where} ({e}); if the port is in "
                               "use, set MASTER_PORT to a free one (or leave it unset with --nproc)") from e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _follower_entry(index: int, world: int, fn: Callable, args: tuple) -> None:
    rank = index + 1
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    _init_group(rank, world)
    try:
        fn(DataParallel(rank, world), *args)
    finally:
        dist.destroy_process_group()
    # Its work is done and rank 0 writes every output: leave without the interpreter's teardown, where the
    # collective library's threads were seen to abort the process once in CI ("terminate called without an
    # active exception", SIGABRT after the last step), which rank 0 would then report as a failed run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def launch(nproc: int, follower: Callable, *args):
    """This process as rank 0 of ``nproc``, with ranks 1..nproc-1 started here running ``follower(dp, *args)``;
    yields rank 0's ``DataParallel`` and waits for the others when the block ends.

    The group meets at MASTER_ADDR:MASTER_PORT (default 127.0.0.1 and a free port). A process that fails or dies
    (out of memory, killed) ends the run with a ``DistributedError`` naming it; the others are stopped."""
    import torch.multiprocessing as mp

    # What this function sets in the environment (the followers inherit it) it takes back when the block ends,
    # so a later launch in this process picks a fresh port instead of one a finished group may still hold.
    ours = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" in os.environ:
        if os.environ["MASTER_ADDR"] in ("127.0.0.1", "localhost") and _port_in_use(int(os.environ["MASTER_PORT"])):
            _unset(ours)
            raise DistributedError(f"MASTER_PORT {os.environ['MASTER_PORT']} is in use on this machine: set it to a "
                                   "free port, or unset it and --nproc picks one")
    else:
        os.environ["MASTER_PORT"] = str(free_port())
    ctx = mp.start_processes(_follower_entry, args=(nproc, follower, args), nprocs=nproc - 1, join=False,
                             start_method="spawn")
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE=str(nproc))
    try:
        _init_group(0, nproc)
        yield DataParallel(0, nproc)
        _join(ctx, nproc)
    except BaseException as e:
        if not isinstance(e, (DistributedError, KeyboardInterrupt)):
            # A collective fails as soon as a peer's socket closes, which can be before that peer has finished
            # dying: give it a moment to show its exit code, so the message can name it.
            _await_a_failed_process(ctx, seconds=5.0)
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        if isinstance(e, (DistributedError, KeyboardInterrupt)):
            raise
        dead = [i + 1 for i, p in enumerate(ctx.processes) if p.exitcode not in (None, 0)]
        if dead:
            raise DistributedError(f"process {dead[0]} of {nproc} failed or died ({e}); if it ran out of memory, use "
                                   "fewer processes or fewer --views-per-step") from e
        raise
    finally:
        _unset(["RANK", "LOCAL_RANK", "WORLD_SIZE", *ours])
        if dist.is_initialized():
            dist.destroy_process_group()


def _unset(keys) -> None:
    for k in keys:
        os.environ.pop(k, None)


def _await_a_failed_process(ctx, seconds: float) -> None:
    """Wait until a started process has exited with an error, or all have exited, or ``seconds`` pass."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        codes = [p.exitcode for p in ctx.processes]
        if any(c not in (None, 0) for c in codes) or all(c is not None for c in codes):
            return
        time.sleep(0.05)


def _join(ctx, nproc: int) -> None:
    import torch.multiprocessing as mp

    try:
        while not ctx.join():
            pass
    except mp.ProcessRaisedException as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise DistributedError(f"data-parallel training failed in process {e.error_index + 1} of {nproc}: "
                               f"{lines[-1] if lines else e}") from e
    except mp.ProcessExitedException as e:
        raise DistributedError(f"process {e.error_index + 1} of {nproc} died ({e}); if it ran out of memory, use "
                               "fewer processes or fewer --views-per-step") from e


# -- the trainer's side: rank 0 hands its trainer to the others, which train in step with it -------------------

def share(dp: DataParallel, trainer) -> None:
    """Rank 0: send the other ranks everything they train on (the data, the settings, the trainer's whole state,
    resumed or fresh, and the pose corrections), then train in step with them."""
    dp.broadcast({
        "model_class": type(trainer.model), "images": trainer.images, "cameras": trainer.cameras,
        "background": trainer.background, "cfg": trainer.cfg, "masks": trainer.masks,
        "depth_targets": trainer.depth_targets, "loss_masks": trainer.loss_masks,
        "camera_hook": trainer.camera_hook, "state": trainer.state_dict(),
    })
    trainer.data_parallel = dp


def follow(dp: DataParallel) -> None:
    """Ranks 1..N-1: build the trainer rank 0 shares and train its share of every step (nothing is written)."""
    from .trainer import Trainer

    threads_per_process(dp.world_size)
    got = dp.broadcast()
    state = got["state"]
    device = torch.device("cuda", torch.cuda.current_device()) if got["images"].is_cuda else torch.device("cpu")
    here = {k: got[k].to(device) if torch.is_tensor(got[k]) else got[k]
            for k in ("images", "background", "masks", "depth_targets", "loss_masks")}
    model = got["model_class"].from_state_dict(state["model"], state["lrs"], device=device)
    trainer = Trainer(model, here["images"], got["cameras"].to(device=device), here["background"], got["cfg"],
                      here["masks"], depth_targets=here["depth_targets"], loss_masks=here["loss_masks"])
    trainer.camera_hook = got["camera_hook"]
    trainer.load_state_dict(state)
    trainer.data_parallel = dp
    trainer.train()


def threads_per_process(nproc: int) -> None:
    """Split the cores between the processes of this machine (unless OMP_NUM_THREADS says otherwise)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
