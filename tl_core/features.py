"""The fixed-feature-extractor fast path.

With the backbone frozen, its output for an image never changes, so there is no reason to
push every image through it every epoch as the classic loop does. The features are computed
once and cached on disk, keyed by the images, backbone, weights and transform. With
augmentation on, `views` augmented versions of each training image are cached, and each epoch
draws one of them per image; the head then trains on cached tensors in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from tl_core import paths
from tl_core.data.folder import DecodedImages, TensorImageDataset
from tl_core.models import Backbone, get_module, set_module
from tl_core.train import autocast

ProgressFn = Callable[[int, int, str], None]


@contextmanager
def headless(model: nn.Module, backbone: Backbone):
    """Temporarily replace the head with Identity, so `model(x)` returns the head's input."""
    head = get_module(model, backbone.head)
    set_module(model, backbone.head, nn.Identity())
    try:
        yield model
    finally:
        set_module(model, backbone.head, head)


@torch.inference_mode()
def extract(
    model: nn.Module,
    backbone: Backbone,
    dataset: Dataset,
    *,
    device: torch.device,
    precision: str,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Features (the head's input) of every item of `dataset`, as a float32 [N, D] tensor."""
    model.eval().to(device)
    out = []
    with headless(model, backbone):
        batch: list[torch.Tensor] = []

        def flush() -> None:
            x = torch.stack(batch).to(device).contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out.append(model(x).float().cpu())
            if on_batch is not None:
                on_batch(len(batch))
            batch.clear()

        for i in range(len(dataset)):
            batch.append(dataset[i][0])
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class FeatureSet:
    train: torch.Tensor  # [views, N, D]
    train_labels: torch.Tensor  # [N]
    val: torch.Tensor  # [M, D]
    val_labels: torch.Tensor  # [M]
    seconds: float = 0.0  # time spent computing (0 when read from the cache)
    from_cache: bool = False


def feature_cache_key(parts: dict) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16).hexdigest()


def compute_features(
    model: nn.Module,
    backbone: Backbone,
    train: DecodedImages,
    val: DecodedImages,
    *,
    train_transform: Callable,
    eval_transform: Callable,
    views: int,
    device: torch.device,
    precision: str,
    seed: int,
    key_parts: dict | None = None,
    on_progress: ProgressFn | None = None,
) -> FeatureSet:
    """Features of `views` augmented copies of each training image and of the validation set.

    With `key_parts`, the result is cached on disk under that key (plus `views` and `seed`).
    """
    import time

    cache_file: Path | None = None
    if key_parts is not None:
        key = feature_cache_key({**key_parts, "views": views, "seed": seed, "precision": precision})
        cache_file = paths.cache_dir("features") / f"{key}.pt"
        if cache_file.is_file():
            try:
                data = torch.load(cache_file, weights_only=True)
                return FeatureSet(
                    data["train"], data["train_labels"], data["val"], data["val_labels"], 0.0, True
                )
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
                cache_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    total = views * len(train.images) + len(val.images)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, total, "computing features")

    # Each view draws its own random crops; seeding makes the cache reproducible.
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        train_views = [
            extract(
                model,
                backbone,
                TensorImageDataset(train, train_transform),
                device=device,
                precision=precision,
                on_batch=tick,
            )
            for _ in range(views)
        ]
    finally:
        torch.random.set_rng_state(gen_state)
    val_feats = extract(
        model,
        backbone,
        TensorImageDataset(val, eval_transform),
        device=device,
        precision=precision,
        on_batch=tick,
    )
    result = FeatureSet(
        torch.stack(train_views),
        torch.tensor(train.labels, dtype=torch.long),
        val_feats,
        torch.tensor(val.labels, dtype=torch.long),
        time.perf_counter() - t0,
    )
    if cache_file is not None:
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        try:
            torch.save(
                {
                    "train": result.train,
                    "train_labels": result.train_labels,
                    "val": result.val,
                    "val_labels": result.val_labels,
                },
                tmp,
            )
            os.replace(tmp, cache_file)
        except OSError:
            tmp.unlink(missing_ok=True)
    return result


class FeatureViews(Dataset):
    """Cached training features; each access draws one of the image's augmented views."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features = features  # [views, N, D]
        self.labels = labels

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = int(torch.randint(self.features.shape[0], (1,)))
        return self.features[view, index], self.labels[index]


class Features(Dataset):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]
