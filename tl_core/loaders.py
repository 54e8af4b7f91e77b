"""Batches for the training loop: by indexing for data held in tensors, else a DataLoader."""

from __future__ import annotations

import math

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler


class TensorBatches:
    """A loader for data held in tensors: whole batches by indexing, no per-item calls.

    Data sets that can return a batch at once (`get_batch(indices) -> (x, y)`: cached
    features, cached prefix outputs, preloaded images with batched augmentation) skip the
    DataLoader's per-item `__getitem__` and collate, which cost more than a linear head's step.
    The order is DataLoader's: the same samplers, drawing from `generator`.
    """

    def __init__(
        self,
        data,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None,
        drop_last: bool = False,
    ) -> None:
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.generator, self.drop_last = generator, drop_last

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        # DataLoader's own samplers, and its base-seed draw (from the global RNG without a
        # generator), so that batches come in the same order and the RNGs end in the same state.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        indices = range(len(self.data))
        sampler = (
            RandomSampler(indices, generator=self.generator)
            if self.shuffle
            else SequentialSampler(indices)
        )
        for batch in BatchSampler(sampler, self.batch_size, self.drop_last):
            yield self.data.get_batch(torch.tensor(batch))


def eval_batch_size(train_batch_size: int, device: torch.device) -> int:
    """Batch size for evaluation passes: larger on a GPU, the training one on a CPU.

    On a CPU a bigger batch buys nothing and its activations cost memory: at 64 images,
    EfficientNet-Lite0's widest layer alone is 154 MB in bf16 per tensor.
    """
    return train_batch_size if device.type == "cpu" else max(train_batch_size, 64)


def make_loader(
    data: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device,
) -> DataLoader | TensorBatches:
    """Batches of `data`: by indexing for in-memory data sets (`get_batch`), else a DataLoader."""
    drop_last = shuffle and len(data) > batch_size and len(data) % batch_size == 1
    if hasattr(data, "get_batch"):
        return TensorBatches(
            data, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
        )
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,  # images are decoded already; workers would only fight for the 2 cores
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
    )
