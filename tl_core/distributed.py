"""One run across processes: PyTorch DistributedDataParallel, launched by `torchrun`.

    torchrun --standalone --nproc_per_node 2 -m tl_core train --data DIR --backbone B --strategy S

Every process (rank) reads the data set, builds the model and prepares the strategy's fast
path as a single-process run does; `fit` then wraps the trained module in DDP, gives each rank
its own shard of the training set (`DistributedSampler`, reshuffled every epoch) and
`--batch-size / world size` images per step, so that one step sees the global batch. The
ranks average the epoch's training loss and accuracy, agree on a cancel request between
batches, and all validate on the whole validation set (the weights are identical after each
step). Rank 0 alone writes the run store, the weights and the JSON; the others write nothing.
The process group uses gloo on the CPU and NCCL on CUDA, from torchrun's environment
variables (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from tl_core.errors import LabError
from tl_core.loaders import make_loader


def launched() -> bool:
    """Whether this process is one of several started by torchrun (`WORLD_SIZE` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of more than one process is set up in this process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def init(device: torch.device) -> None:
    """Join torchrun's process group: NCCL with one GPU per process on CUDA, gloo on the CPU."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise LabError(
            f"training across processes runs on cpu or cuda, not {device.type}; "
            "pass --device cpu or --device cuda"
        )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(
    model: nn.Module, device: torch.device, train_mode: Callable[[nn.Module], None]
) -> tuple[nn.Module, Callable[[nn.Module], None]]:
    """(`model` in DistributedDataParallel, its training-mode setter) when a process group
    is active, else (`model`, `train_mode`). The wrapper's setter puts the wrapper in training
    mode and lets `train_mode` set the module's layers (frozen BatchNorm stays in eval)."""
    if not active():
        return model, train_mode
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def set_mode(wrapper: nn.Module) -> None:
        wrapper.train()
        train_mode(model)

    return net, set_mode


def _per_rank_batch(batch_size: int) -> int:
    n = world_size()
    if batch_size % n:
        raise LabError(
            f"--batch-size {batch_size} does not split evenly over {n} processes; "
            f"use a multiple of {n} (the batch size is the global one, over all processes)"
        )
    return batch_size // n


class ShardedBatches:
    """This rank's batches of an in-memory data set (`get_batch`), from a DistributedSampler."""

    def __init__(self, data, sampler: DistributedSampler, batch_size: int, drop_last: bool):
        self.data, self.sampler = data, sampler
        self.batches = BatchSampler(sampler, batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield self.data.get_batch(torch.tensor(batch))


def train_loader(
    data: Dataset,
    batch_size: int,
    *,
    seed: int,
    generator: torch.Generator,
    device: torch.device,
):
    """The training batches: `make_loader`'s in one process; across processes, this rank's
    shard of `data`, `batch_size / world size` images at a time.

    Every rank gets as many samples (DistributedSampler pads with repeats), hence as many
    batches, which DDP needs: a rank with one more batch would wait for the others forever.
    """
    if not active():
        return make_loader(data, batch_size, shuffle=True, generator=generator, device=device)
    per = _per_rank_batch(batch_size)
    sampler = DistributedSampler(data, num_replicas=world_size(), rank=rank(), seed=seed)
    # A last batch of one image breaks BatchNorm in training mode, as in `make_loader`.
    drop_last = sampler.num_samples > per and sampler.num_samples % per == 1
    if hasattr(data, "get_batch"):
        return ShardedBatches(data, sampler, per, drop_last)
    return DataLoader(
        data,
        batch_size=per,
        sampler=sampler,
        num_workers=0,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
    )


def set_epoch(loader, epoch: int) -> None:
    """Reshuffle a sharded loader for `epoch` (every rank the same permutation)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


def mean(*values: float, device: torch.device) -> tuple[float, ...]:
    """The mean of each value over the ranks (each rank saw as many samples)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t)
    return tuple(v / world_size() for v in t.tolist())


def agreed_stop(
    should_stop: Callable[[], bool] | None, device: torch.device
) -> Callable[[], bool] | None:
    """A stop check every rank calls between batches: true on all ranks once any rank
    (rank 0 reads the store's cancel request) wants to stop, so that none waits alone."""
    if not active():
        return should_stop

    def stop() -> bool:
        wanted = bool(should_stop()) if should_stop is not None else False
        flag = torch.tensor([float(wanted)], device=_comm_device(device))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    return stop


def _comm_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------------------- one run


def train_run(store_factory: Callable[[], object], spec, workspace: str = "") -> dict | None:
    """Train `spec` as one run over torchrun's processes; rank 0 returns the run's record,
    the other ranks None. Rank 0 records the run (with `world_size`) and writes every file."""
    from tl_core.jobs import execute_run, queue_runs
    from tl_core.machine import resolve_device

    init(resolve_device(spec.train.device))
    try:
        if rank() == 0:
            store = store_factory()
            run_id = queue_runs(store, [spec], workspace=workspace)[0]
            dist.barrier()  # the store exists before another rank reads a starting run in it
            return execute_run(store, run_id)
        dist.barrier()
        _replica(store_factory, spec)
        return None
    finally:
        shutdown()


def _replica(store_factory: Callable[[], object], spec) -> None:
    """A rank other than 0: the same steps as `tl_core.run` up to `fit`, writing nothing."""
    from tl_core.machine import resolve_runtime
    from tl_core.prepare import load_data, prepare_fast_path
    from tl_core.run import build
    from tl_core.train import fit

    runtime = resolve_runtime(spec.train.device, spec.train.precision)

    def quiet(_progress) -> None:
        return None

    data = load_data(spec, quiet)
    built = build(store_factory() if spec.init_from else None, spec, data)
    prepared = prepare_fast_path(spec, built, data, runtime, quiet, lambda: False)
    fit(
        prepared.net,
        prepared.train_set,
        prepared.val_set,
        prepared.config,
        set_train_mode=prepared.train_mode,
        head_names=prepared.head_names,
        runtime=runtime,
    )
