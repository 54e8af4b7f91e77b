"""A run's inputs: its data set, read once (`load_data`), and what `fit` trains on the
strategy's fast path (`prepare_fast_path`).

The strategy table (`tl_core.strategies`) names the fast path: "features" caches the frozen
backbone's features and trains only the head on them; "prefix" caches the frozen prefix's
outputs and trains the rest of the network on them; "probe" trains the head alone on the
cached features first and then every layer on images (probe_finetune, `tl_core.probe`); none
trains on batches of preloaded images, augmented a batch at a time. `RunSpec.fast=False` takes the classic per-image path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from tl_core import features as feats
from tl_core.backbones import get_backbone
from tl_core.batches import ImageBatches
from tl_core.data.folder import (
    DataSplit,
    DecodedImages,
    TensorImageDataset,
    decode_items,
    scan_dataset,
)
from tl_core.data.store import MANIFEST
from tl_core.errors import LabError
from tl_core.machine import Runtime
from tl_core.models import BuiltModel, get_module, head_parameter_names, set_train_mode
from tl_core.probe import probe_head
from tl_core.progress import ProgressFn
from tl_core.spec import RunSpec
from tl_core.strategies import get_strategy
from tl_core.train import Cancelled, TrainConfig, eval_batch_size
from tl_core.transforms import Preprocessing, eval_transform, train_transform

# ---------------------------------------------------------------------------- 1. data


@dataclass
class RunData:
    """The data set of a run, scanned once and decoded."""

    split: DataSplit
    pre: Preprocessing
    train: DecodedImages
    val: DecodedImages
    decode_seconds: float

    @property
    def skipped(self) -> int:
        return len(self.train.skipped) + len(self.val.skipped)


def load_data(spec: RunSpec, on_progress: ProgressFn) -> RunData:
    """Scan the data set (once per run) and decode its images at the backbone's size."""
    split = scan_dataset(
        spec.data, val_fraction=spec.val_fraction, seed=spec.split_seed, per_class=spec.per_class
    )
    pre = Preprocessing.for_backbone(get_backbone(spec.backbone))
    t0 = time.perf_counter()
    # A plain folder gets the placeholder check that an import into the lab made already.
    raw = not (split.root / MANIFEST).is_file()
    train = decode_items(
        split.train, pre.resize_size, on_progress=on_progress, check_placeholders=raw
    )
    val = decode_items(
        split.val,
        pre.resize_size,
        on_progress=on_progress,
        message="decoding validation images",
        check_placeholders=raw,
    )
    if not train.images or not val.images:
        raise LabError("no readable images left after skipping unreadable files")
    return RunData(split, pre, train, val, time.perf_counter() - t0)


# ---------------------------------------------------------------------------- 3. fast path


@dataclass
class Prepared:
    """What `fit` trains on the strategy's path, and what predicts the validation set."""

    path: str  # "cached features", "cached prefix" or "images" (timings.json)
    model: nn.Module  # the whole model, trained in place through `net`
    net: nn.Module  # what `fit` trains: the head, the rest after the prefix, or the model
    train_set: object
    val_set: object
    config: TrainConfig
    head_names: set[str] | None = None
    train_mode: Callable[[nn.Module], None] | None = set_train_mode
    cache_seconds: float = 0.0
    cancelled: bool = False  # a cancel request came while the cache was built
    # The validation predictions: `predictor` on `predict_set` in batches of `predict_batch`.
    predictor: nn.Module | None = None
    predict_set: object = None
    predict_batch: int = 1
    predict_in_fp32: bool = False  # cached features: the head alone, in fp32, channels first


def prepare_fast_path(
    spec: RunSpec,
    built: BuiltModel,
    data: RunData,
    runtime: Runtime,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
) -> Prepared:
    """The data and module `fit` trains, by the strategy's fast path (`spec.fast` off: the
    classic per-image path)."""
    fast_path = get_strategy(spec.strategy).fast_path if spec.fast else None
    if fast_path == "features":
        return _prepare_features(spec, built, data, runtime, on_progress)
    if fast_path == "probe":
        features = _prepare_features(spec, built, data, runtime, on_progress)
        return _probe_then_images(spec, built, data, runtime, features, on_progress, should_stop)
    if fast_path == "prefix":
        parts = feats.split_frozen_prefix(
            built.model, built.backbone, spec.strategy, spec.trainable_blocks
        )
        if parts is not None:
            return _prepare_prefix(spec, built, data, runtime, parts, on_progress, should_stop)
    return _prepare_images(spec, built, data, runtime)


def _views(spec: RunSpec) -> int:
    return 1 if spec.augment == "none" else spec.feature_views


def _image_predict_set(spec: RunSpec, data: RunData, runtime: Runtime) -> dict:
    return {
        "predict_set": TensorImageDataset(data.val, eval_transform(data.pre)),
        "predict_batch": eval_batch_size(spec.train.batch_size, runtime.device),
    }


def _prepare_features(
    spec: RunSpec,
    built: BuiltModel,
    data: RunData,
    runtime: Runtime,
    on_progress: ProgressFn,
) -> Prepared:
    """feature_extractor: backbone features cached once (`views` augmented copies of each
    training image); only the head trains, on the cached tensors."""
    model, backbone, pre = built.model, built.backbone, data.pre
    fset = feats.compute_features(
        model,
        backbone,
        data.train,
        data.val,
        train_transform=train_transform(pre, augment=spec.augment),
        eval_transform=eval_transform(pre),
        views=_views(spec),
        device=runtime.device,
        precision=runtime.precision,
        seed=spec.train.seed,
        key_parts={
            "data": data.split.content_hash,
            "train": data.train.paths,
            "val": data.val.paths,
            "backbone": spec.backbone,
            "weights": built.weights_source,
            "transform": {"pre": pre.to_dict(), "augment": spec.augment},
        },
        on_progress=on_progress,
    )
    head = get_module(model, backbone.head)
    val = feats.Features(fset.val, fset.val_labels)
    return Prepared(
        path="cached features",
        model=model,
        net=head,
        train_set=feats.FeatureViews(fset.train, fset.train_labels),
        val_set=val,
        config=replace(spec.train, channels_last=False),
        train_mode=None,
        cache_seconds=fset.seconds,
        predictor=head,
        predict_set=val,
        predict_batch=len(data.val.images),
        predict_in_fp32=True,
    )


def _prepare_prefix(
    spec: RunSpec,
    built: BuiltModel,
    data: RunData,
    runtime: Runtime,
    parts: tuple[nn.Module, nn.Module],
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
) -> Prepared:
    """partial_finetune: the frozen prefix run once per augmented view, not every epoch.

    The rest of the model trains on the cached outputs (and so trains `model`, whose modules
    it shares). Without room for one cached view, the prefix runs every batch without
    autograd instead.
    """
    prefix, rest = parts
    model, device = built.model, runtime.device
    head_ids = {id(p) for p in get_module(model, built.backbone.head).parameters()}
    train_images = ImageBatches(
        data.train, data.pre, train=True, augment=spec.augment, device=device
    )
    val_images = ImageBatches(data.val, data.pre, train=False, device=device)
    common = dict(model=model, config=spec.train, **_image_predict_set(spec, data, runtime))
    try:
        cache = feats.compute_prefix_cache(
            prefix,
            train_images,
            val_images,
            views=_views(spec),
            device=device,
            precision=runtime.precision,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    except Cancelled:
        return Prepared(
            "cached prefix", net=rest, train_set=None, val_set=None, cancelled=True, **common
        )
    if cache is None:
        net = nn.Sequential(feats.FrozenPrefix(prefix), rest)
        train_set, val_set, seconds = train_images, val_images, 0.0
    else:
        net = rest
        train_set = feats.FeatureViews(cache.train, cache.train_labels)
        val_set = feats.Features(cache.val, cache.val_labels)
        seconds = cache.seconds
    return Prepared(
        "cached prefix",
        net=net,
        train_set=train_set,
        val_set=val_set,
        head_names={n for n, p in net.named_parameters() if id(p) in head_ids},
        cache_seconds=seconds,
        predictor=model,
        **common,
    )


def _probe_then_images(
    spec: RunSpec,
    built: BuiltModel,
    data: RunData,
    runtime: Runtime,
    features: Prepared,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
) -> Prepared:
    """probe_finetune: the head first, alone on the feature_extractor path's cached features
    (`features`, `tl_core.probe`); then every layer trains on images, from that head.

    A resumed run probes again (features from the disk cache, seconds), and its checkpoint
    then replaces the whole model.
    """
    probe_head(
        features.net,
        features.train_set,
        features.val_set,
        spec.train,
        on_progress=on_progress,
        should_stop=should_stop,
        runtime=runtime,
    )
    images = _prepare_images(spec, built, data, runtime)
    return replace(
        images,
        path="probe on cached features, then images",
        cache_seconds=features.cache_seconds,
    )


def _prepare_images(spec: RunSpec, built: BuiltModel, data: RunData, runtime: Runtime) -> Prepared:
    """Every layer that trains sees every image every epoch: batched augmentation of
    preloaded images (`spec.fast`), or the per-image presets."""
    pre, device = data.pre, runtime.device
    if spec.fast:
        train_set = ImageBatches(data.train, pre, train=True, augment=spec.augment, device=device)
        val_set = ImageBatches(data.val, pre, train=False, device=device)
    else:
        train_set = TensorImageDataset(data.train, train_transform(pre, augment=spec.augment))
        val_set = TensorImageDataset(data.val, eval_transform(pre))
    return Prepared(
        "images",
        model=built.model,
        net=built.model,
        train_set=train_set,
        val_set=val_set,
        config=spec.train,
        head_names=head_parameter_names(built.model, built.backbone),
        predictor=built.model,
        **_image_predict_set(spec, data, runtime),
    )
