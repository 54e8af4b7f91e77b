"""The fast paths for frozen layers: cached features and cached frozen-prefix outputs.

With the backbone frozen, its output for an image never changes, so there is no reason to
push every image through it every epoch as the classic loop does. The features are computed
once and cached on disk, keyed by the images, backbone, weights and transform. With
augmentation on, `views` augmented versions of each training image are cached, and each epoch
draws one of them per image; the head then trains on cached tensors in milliseconds.

Partial fine-tuning is the same idea one cut earlier: `split_frozen_prefix` cuts the network
into the frozen prefix and the trainable rest (along the layer sequence of the backbone's
registry entry, `Backbone.layers`; an unknown backbone or a model it does not cover is an
error, never a silent slow path), `compute_prefix_cache` runs the prefix once per
augmented view without autograd (in eval mode, as frozen layers should be) and keeps its
outputs in a compact dtype, and only the rest trains each epoch. Where the outputs would not
fit in `PREFIX_CACHE_BYTES`, fewer views are cached; where not even one fits, the prefix runs
every batch, still without autograd (`FrozenPrefix`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from tl_core import paths
from tl_core.backbones import Layers
from tl_core.data.folder import DecodedImages, TensorImageDataset
from tl_core.errors import LabError
from tl_core.models import Backbone, get_backbone, get_module, set_module, trainable_prefixes
from tl_core.progress import ProgressFn, counter
from tl_core.train import Cancelled, autocast, eval_batch_size

PREFIX_CACHE_BYTES = 1 << 30  # cached prefix outputs of all views, at most (1 GiB)


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
    batch_size: int = 16,
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
    seconds: float = 0.0  # time spent computing (0 when read from the cache; not cached)


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
    cache_file: Path | None = None
    if key_parts is not None:
        key = feature_cache_key({**key_parts, "views": views, "seed": seed, "precision": precision})
        cache_file = paths.cache_dir("features") / f"{key}.pt"
        cached = paths.load_cache(cache_file)
        if cached is not None:
            return FeatureSet(**cached)
    t0 = time.perf_counter()
    total = views * len(train.images) + len(val.images)
    common = dict(
        device=device,
        precision=precision,
        batch_size=eval_batch_size(16, device),
        on_batch=counter("features", "computing features", total, on_progress),
    )
    # Each view draws its own random crops; seeding makes the cache reproducible.
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        train_set = TensorImageDataset(train, train_transform)
        train_views = [extract(model, backbone, train_set, **common) for _ in range(views)]
    finally:
        torch.random.set_rng_state(gen_state)
    val_feats = extract(model, backbone, TensorImageDataset(val, eval_transform), **common)
    result = FeatureSet(
        torch.stack(train_views),
        torch.tensor(train.labels, dtype=torch.long),
        val_feats,
        torch.tensor(val.labels, dtype=torch.long),
    )
    if cache_file is not None:
        paths.save_cache(dict(vars(result)), cache_file)
    result.seconds = time.perf_counter() - t0
    return result


class FeatureViews(Dataset):
    """Cached training features; each access draws one of the image's augmented views.

    `features` may be stored in a compact dtype (bf16); items and batches come out as float32.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features = features  # [views, N, ...]
        self.labels = labels

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = int(torch.randint(self.features.shape[0], (1,)))
        return self.features[view, index].float(), self.labels[index]

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = torch.randint(self.features.shape[0], (indices.shape[0],))
        return self.features[views, indices].float(), self.labels[indices]


class Features(Dataset):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index].float(), self.labels[index]

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[indices].float(), self.labels[indices]


# ---------------------------------------------------------------------------- frozen prefix


def layer_sequence(model: nn.Module, backbone: Backbone | str) -> Layers:
    """The network as an ordered list of (module path, module) whose composition is `model`,
    as its backbone's registry entry lays it out. An unknown backbone, or a model that is not
    the backbone's architecture, is an error: there is no silent slow path."""
    if isinstance(backbone, str):
        backbone = get_backbone(backbone)
    try:
        return backbone.layers(model)
    except AttributeError as exc:
        raise LabError(
            f"the model ({type(model).__name__}) is not a {backbone.name}; "
            f"its layer sequence cannot be read: {exc}"
        ) from exc


def split_frozen_prefix(
    model: nn.Module, backbone: Backbone | str, strategy: str, trainable_blocks: int = 1
) -> tuple[nn.Sequential, nn.Sequential] | None:
    """(frozen prefix, trainable rest) sharing `model`'s modules, or None when there is no cut.

    Training the rest trains `model`. None when nothing before the first trainable layer is
    frozen; a LabError when the backbone is unknown or its layer sequence does not cover
    the model (a registry entry to fix, never a silent fallback).
    """
    if isinstance(backbone, str):
        backbone = get_backbone(backbone)
    pieces = layer_sequence(model, backbone)
    train_paths = trainable_prefixes(backbone, strategy, trainable_blocks)

    def trains(path: str) -> bool:
        return any(p == "" or path == p or path.startswith(p + ".") for p in train_paths)

    cut = next((i for i, (path, _) in enumerate(pieces) if path and trains(path)), None)
    if not cut:
        return None
    prefix = nn.Sequential(*(m for _, m in pieces[:cut]))
    rest = nn.Sequential(*(m for _, m in pieces[cut:]))
    covered = {id(p) for p in prefix.parameters()} | {id(p) for p in rest.parameters()}
    if covered != {id(p) for p in model.parameters()}:
        raise LabError(
            f"the layer sequence of {backbone.name} does not cover every parameter of the "
            "model; fix its `layers` in tl_core/backbones.py"
        )
    if any(p.requires_grad for p in prefix.parameters()):
        return None
    return prefix, rest


class FrozenPrefix(nn.Module):
    """Runs a frozen prefix in eval mode and without autograd, whatever mode its parent is in."""

    def __init__(self, prefix: nn.Module) -> None:
        super().__init__()
        self.prefix = prefix

    def train(self, mode: bool = True) -> FrozenPrefix:
        super().train(mode)
        self.prefix.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.prefix(x)


def cache_dtype(precision: str) -> torch.dtype:
    """bf16 where training runs in bf16 anyway (half the memory); float32 otherwise."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


@torch.inference_mode()
def run_frozen(
    fn: nn.Module,
    data,
    *,
    device: torch.device,
    precision: str,
    out_dtype: torch.dtype = torch.float32,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """`fn` on every item of `data` (a data set with `get_batch`), outputs stacked on the CPU."""
    fn.eval().to(device)
    out = []
    n = len(data)
    for start in range(0, n, batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled
        x, _ = data.get_batch(torch.arange(start, min(start + batch_size, n)))
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out.append(fn(x).to("cpu", out_dtype))
        if on_batch is not None:
            on_batch(x.shape[0])
    return torch.cat(out)


@dataclass
class PrefixCache:
    train: torch.Tensor  # [views, N, C, H, W], in a compact dtype
    train_labels: torch.Tensor
    val: torch.Tensor  # [M, C, H, W]
    val_labels: torch.Tensor
    views: int
    seconds: float


def views_that_fit(per_image_bytes: int, images: int, views: int, budget: int) -> int:
    """How many of `views` augmented views of every image fit in `budget` bytes (maybe 0)."""
    return max(0, min(views, budget // max(1, per_image_bytes * images)))


def compute_prefix_cache(
    prefix: nn.Module,
    train_batches,
    val_batches,
    *,
    views: int,
    device: torch.device,
    precision: str,
    budget: int = PREFIX_CACHE_BYTES,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PrefixCache | None:
    """Prefix outputs for `views` augmented passes over `train_batches` and one over `val_batches`.

    Both are data sets with `get_batch` (e.g. `tl_core.batches.ImageBatches`); augmentation
    draws from the global RNG, so the caller's seed makes the cache reproducible. Returns
    None when not even one view fits in `budget` bytes.
    """
    t0 = time.perf_counter()
    dtype = cache_dtype(precision)
    with torch.inference_mode():
        probe, _ = val_batches.get_batch(torch.arange(1))
        prefix.eval().to(device)
        with autocast(device, precision):
            shape = prefix(probe.to(device).contiguous(memory_format=torch.channels_last)).shape[1:]
    per_image = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    fit_views = views_that_fit(
        per_image, len(train_batches), views, budget - per_image * len(val_batches)
    )
    if fit_views == 0:
        return None
    total = fit_views * len(train_batches) + len(val_batches)
    tick = counter("prefix", "caching frozen-layer outputs", total, on_progress)

    common = dict(
        device=device,
        precision=precision,
        out_dtype=dtype,
        batch_size=eval_batch_size(16, device),
        on_batch=tick,
        should_stop=should_stop,
    )
    train = torch.stack([run_frozen(prefix, train_batches, **common) for _ in range(fit_views)])
    val = run_frozen(prefix, val_batches, **common)
    return PrefixCache(
        train,
        train_batches.labels,
        val,
        val_batches.labels,
        fit_views,
        time.perf_counter() - t0,
    )
