"""One training run from start to finish, and the queue of runs.

A `RunSpec` says what to train; `queue_runs` records runs in the store; `execute_run` does
the work (data, model, the right fast path for the strategy, training, saving weights and
validation predictions) while keeping the store's progress, heartbeat and epochs current.
The CLI calls it in-process; the web app's background worker (`tl_core.worker`) calls it
for each queued run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from tl_core import features as feats
from tl_core.batches import ImageBatches
from tl_core.data.folder import DataSplit, TensorImageDataset, decode_items, scan_dataset
from tl_core.errors import LabError, as_lab_error
from tl_core.models import (
    BACKBONES,
    build_model,
    check_strategy,
    count_params,
    get_backbone,
    get_module,
    head_parameter_names,
    set_train_mode,
)
from tl_core.runs import NewRun, RunStore, atomic_torch_save
from tl_core.strategies import STRATEGIES
from tl_core.train import (
    Cancelled,
    History,
    Progress,
    TrainConfig,
    configure_threads,
    eval_batch_size,
    evaluate,
    fit,
    make_loader,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from tl_core.transforms import (
    AUGMENTATIONS,
    Preprocessing,
    check_augment,
    eval_transform,
    train_transform,
)

WEIGHTS_FILE = "weights.pt"
META_FILE = "meta.json"
PREDICTIONS_FILE = "predictions.json"
TIMINGS_FILE = "timings.json"  # one-off costs (decoding, caches) apart from training
CHECKPOINT_FILE = "checkpoint.pt"  # the state after the last finished epoch, for `resume`
StatusFn = Callable[[str, int, int], None]  # (message, done, total) for one-off steps


@dataclass(frozen=True)
class RunSpec:
    """What to train: data, backbone, strategy and the training configuration."""

    # Each field's metadata gives its command-line help (see tl_core/cli/options.py).
    data: str = field(metadata={"help": "a data set folder, or the name of an imported data set"})
    backbone: str = field(metadata={"choices": BACKBONES})
    strategy: str = field(metadata={"choices": STRATEGIES})
    train: TrainConfig = field(default_factory=TrainConfig)
    trainable_blocks: int = field(
        default=1, metadata={"help": "layer groups that train in partial_finetune"}
    )
    augment: str = field(default="crop_flip", metadata={"choices": AUGMENTATIONS})
    per_class: int | None = field(default=None, metadata={"help": "cap training images per class"})
    val_fraction: float = field(
        default=0.2, metadata={"help": "share of images held out when the set has no val/"}
    )
    split_seed: int = field(  # the split (and per-class subset) stay fixed across training seeds
        default=0, metadata={"help": "seed of the train/val split and the per-class subset"}
    )
    init_from: str | None = field(
        default=None, metadata={"metavar": "RUN_ID", "help": "start from a finished run's weights"}
    )
    weights: str | None = field(
        default=None, metadata={"metavar": "FILE", "help": "a local ImageNet weights file"}
    )
    # Augmented views cached per training image (feature_extractor, and partial_finetune's
    # frozen-prefix outputs). 5 rather than 10: half the cost to build (README, "Speed").
    feature_views: int = field(
        default=5, metadata={"help": "augmented views cached per image (cached fast paths)"}
    )
    fast: bool = field(  # cached features / frozen-prefix outputs where the strategy allows
        default=True, metadata={"help": "disable the cached fast paths (features, prefix)"}
    )
    name: str | None = None
    recipe: str | None = field(default=None, metadata={"cli": False})

    def validate(self) -> RunSpec:
        backbone = get_backbone(self.backbone)
        check_strategy(self.strategy)
        check_augment(self.augment)
        self.train.validate()
        if self.per_class is not None and self.per_class < 1:
            raise LabError(f"images per class must be at least 1, got {self.per_class}")
        if not 1 <= self.feature_views <= 100:
            raise LabError(f"feature views must be between 1 and 100, got {self.feature_views}")
        if self.strategy == "partial_finetune" and not 1 <= self.trainable_blocks <= len(
            backbone.layer_groups
        ):
            raise LabError(
                f"trainable blocks must be between 1 and {len(backbone.layer_groups)} for {backbone.name} "
                f"(its layer groups: {', '.join(backbone.group_names)})"
            )
        if self.strategy == "scratch" and self.init_from:
            raise LabError("strategy 'scratch' starts from random weights; drop --init-from")
        if (
            self.strategy != "scratch"
            and not backbone.has_imagenet_weights
            and not self.init_from
            and not self.weights
        ):
            raise LabError(
                f"{backbone.name} has no ImageNet weights, so strategy {self.strategy!r} needs a starting "
                "point: pass --init-from RUN_ID (a run trained here), or use strategy 'scratch'"
            )
        return self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["train"] = self.train.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        data = dict(data)
        data["train"] = TrainConfig(**data.get("train", {}))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def expand(spec: RunSpec, strategies: Sequence[str] | None = None, seeds: int = 1) -> list[RunSpec]:
    """One spec per strategy and seed, strategy-major: the one seed rule of the lab.

    Training seeds run `spec.train.seed`, +1, ... +seeds-1; the data split (`split_seed`)
    stays the same, so every run of a comparison sees the same images. `strategies` defaults
    to the spec's own strategy.
    """
    if seeds < 1:
        raise LabError(f"seeds must be at least 1, got {seeds}")
    names = list(strategies) if strategies else [spec.strategy]
    return [
        replace(spec, strategy=name, train=replace(spec.train, seed=spec.train.seed + k))
        for name in names
        for k in range(seeds)
    ]


def queue_runs(
    store: RunStore,
    specs: list[RunSpec],
    *,
    request_id: str | None = None,
    workspace: str = "",
) -> list[str]:
    """Validate and record runs as one group (one comparison); returns their ids."""
    for spec in specs:
        spec.validate()
        scan_dataset(
            spec.data,
            val_fraction=spec.val_fraction,
            seed=spec.split_seed,
            per_class=spec.per_class,
        )
        if spec.init_from:
            _init_source(store, spec)
    return store.create_group(
        [
            NewRun(
                data_path=str(spec.data),
                backbone=spec.backbone,
                strategy=spec.strategy,
                config=spec.to_dict(),
                name=spec.name,
                seed=spec.train.seed,
                recipe=spec.recipe,
                workspace=workspace,
            )
            for spec in specs
        ],
        request_id=request_id,
    )


def _init_source(store: RunStore, spec: RunSpec) -> dict[str, torch.Tensor]:
    source = store.get(spec.init_from)
    if source["status"] != "done":
        raise LabError(
            f"run {spec.init_from} is {source['status']}, not done; start from a finished run"
        )
    if source["backbone"] != spec.backbone:
        raise LabError(
            f"run {spec.init_from} trained {source['backbone']}, not {spec.backbone}; "
            f"use --backbone {source['backbone']} to start from it"
        )
    path = store.run_dir(spec.init_from, create=False) / WEIGHTS_FILE
    if not path.is_file():
        raise LabError(f"run {spec.init_from} has no saved weights")
    return torch.load(path, map_location="cpu", weights_only=True)


def _history_summary(history: History) -> dict:
    return {
        "best_val_acc": history.best_val_acc if history.epochs else None,
        "final_val_acc": history.final_val_acc,
        "best_epoch": history.best_epoch,
    }


def execute_run(
    store: RunStore,
    run_id: str,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_status: StatusFn | None = None,
    heartbeat_every: float = 1.0,
) -> dict:
    """Train the queued (or just created) run `run_id`; returns its final record.

    A run that stopped part-way (its process killed, a full disk) and left a checkpoint
    continues from its last finished epoch. Out of GPU memory, it is retried once with half the
    batch size. A LabError or any other exception marks the run failed with the message, and is
    raised again for the caller; a cancel request stops it between batches as `cancelled`.
    """
    record = store.get(run_id)
    if record["status"] != "running":
        store.mark_running(run_id)
    spec = RunSpec.from_dict(record["config"])
    kwargs = dict(on_progress=on_progress, on_status=on_status, heartbeat_every=heartbeat_every)
    try:
        try:
            _train(store, run_id, spec, **kwargs)
        except torch.OutOfMemoryError:
            half = max(1, spec.train.batch_size // 2)
            if half == spec.train.batch_size:
                raise
            _free_accelerator_memory()
            (store.run_dir(run_id) / CHECKPOINT_FILE).unlink(missing_ok=True)
            spec = replace(spec, train=replace(spec.train, batch_size=half))
            store.update(
                run_id,
                config=spec.to_dict(),
                error=f"out of memory; retrying with batch size {half}",
            )
            try:
                _train(store, run_id, spec, **kwargs)
            except torch.OutOfMemoryError as exc:
                raise LabError(
                    f"out of memory even with batch size {half}; lower --batch-size further, "
                    "choose a smaller backbone, or train on the CPU (--device cpu)"
                ) from exc
    except LabError as exc:
        store.finish(run_id, "failed", error=str(exc))
        raise
    except OSError as exc:
        disk = as_lab_error(exc)
        store.finish(
            run_id, "failed", error=str(disk) if disk else f"{exc.__class__.__name__}: {exc}"
        )
        raise
    except Exception as exc:
        store.finish(
            run_id,
            "failed",
            error=f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc(limit=8)}",
        )
        raise
    return store.get(run_id)


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resumable(store: RunStore, run_id: str) -> bool:
    """Whether `run_id` stopped part-way and has a checkpoint to continue from."""
    record = store.get(run_id)
    return (
        record["status"] in ("failed", "cancelled")
        and (store.run_dir(run_id, create=False) / CHECKPOINT_FILE).is_file()
    )


def _check_resumable(store: RunStore, run_id: str) -> None:
    record = store.get(run_id)
    if record["status"] in ("queued", "running", "done"):
        raise LabError(
            f"run {run_id} is {record['status']}; only failed or cancelled runs can resume"
        )
    if not resumable(store, run_id):
        raise LabError(
            f"run {run_id} has no checkpoint (it stopped before finishing its first epoch); "
            "start it again with the same settings"
        )


def resume_run(store: RunStore, run_id: str, **kwargs) -> dict:
    """Continue a failed or cancelled run from its last finished epoch, in this process."""
    _check_resumable(store, run_id)
    store.update(run_id, status="running", cancel_requested=0, error=None, finished=None)
    return execute_run(store, run_id, **kwargs)


def queue_resume(store: RunStore, run_id: str) -> None:
    """Put a failed or cancelled run back in the queue; the worker continues it from its
    checkpoint (`execute_run` picks the checkpoint up)."""
    _check_resumable(store, run_id)
    store.update(run_id, status="queued", cancel_requested=0, error=None, finished=None)


def _load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged checkpoint means starting over, said below
        path.rename(path.with_name(path.name + ".damaged"))
        return None


def _train(
    store: RunStore,
    run_id: str,
    spec: RunSpec,
    *,
    on_progress: Callable[[Progress], None] | None,
    on_status: StatusFn | None,
    heartbeat_every: float,
) -> None:
    spec.validate()
    configure_threads()
    t_start = time.perf_counter()
    split = scan_dataset(
        spec.data, val_fraction=spec.val_fraction, seed=spec.split_seed, per_class=spec.per_class
    )
    backbone = get_backbone(spec.backbone)
    pre = Preprocessing.for_backbone(backbone)
    init_state = _init_source(store, spec) if spec.init_from else None
    seed_everything(spec.train.seed)  # the new head's (or a scratch model's) initial weights
    built = build_model(
        spec.backbone,
        len(split.classes),
        spec.strategy,
        trainable_blocks=spec.trainable_blocks,
        weights_file=spec.weights,
        init_state=init_state,
        init_label=f"run:{spec.init_from}" if spec.init_from else None,
    )
    model = built.model
    trainable, total = count_params(model)
    device = resolve_device(spec.train.device)
    precision = resolve_precision(spec.train.precision, device)

    last_beat = 0.0

    def status(message: str, done: int, total_steps: int) -> None:
        nonlocal last_beat
        if on_status is not None:
            on_status(message, done, total_steps)
        now = time.monotonic()
        if now - last_beat >= heartbeat_every or done == total_steps:
            last_beat = now
            store.heartbeat(run_id, phase=message, batch=done, batches=total_steps)

    t_decode = time.perf_counter()
    train_imgs = decode_items(
        split.train, pre.resize_size, on_progress=lambda d, t, m: status(m, d, t)
    )
    val_imgs = decode_items(
        split.val,
        pre.resize_size,
        on_progress=lambda d, t, m: status("decoding validation images", d, t),
    )
    decode_seconds = time.perf_counter() - t_decode
    if not train_imgs.images or not val_imgs.images:
        raise LabError("no readable images left after skipping unreadable files")
    store.update(
        run_id,
        data_hash=split.content_hash,
        classes=split.classes,
        num_classes=len(split.classes),
        num_train=len(train_imgs.images),
        num_val=len(val_imgs.images),
        trainable_params=trainable,
        total_params=total,
        device=f"{device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
    )

    cancel_checked = 0.0
    cancelled = False

    def should_stop() -> bool:
        nonlocal cancel_checked, cancelled
        now = time.monotonic()
        if now - cancel_checked >= 0.5:
            cancel_checked = now
            cancelled = store.cancel_requested(run_id)
        return cancelled

    def progress(p: Progress) -> None:
        nonlocal last_beat
        if p.epoch_stats is not None:
            store.add_epoch(run_id, asdict(p.epoch_stats))
        now = time.monotonic()
        if p.epoch_stats is not None or now - last_beat >= heartbeat_every:
            last_beat = now
            store.heartbeat(
                run_id,
                phase="training",
                epoch=p.epoch - (p.epoch_stats is None),
                batch=p.batch,
                batches=p.batches,
                running_loss=p.loss,
                running_acc=p.acc,
            )
        if on_progress is not None:
            on_progress(p)

    ckpt_path = store.run_dir(run_id) / CHECKPOINT_FILE
    resume_state = _load_checkpoint(ckpt_path)
    elapsed_before = resume_state.get("elapsed", 0.0) if resume_state else 0.0
    if resume_state is not None:
        status(f"resuming after epoch {resume_state['epoch']}", 1, 1)

    def save_checkpoint(state: dict) -> None:
        state["elapsed"] = elapsed_before + time.perf_counter() - t_start
        atomic_torch_save(state, ckpt_path)

    resume_kw = {"checkpoint": save_checkpoint, "resume": resume_state}

    cache_seconds = 0.0
    rest_of_model = (
        feats.split_frozen_prefix(model, backbone, spec.strategy, spec.trainable_blocks)
        if spec.strategy == "partial_finetune" and spec.fast
        else None
    )
    if spec.strategy == "feature_extractor" and spec.fast:
        views = 1 if spec.augment == "none" else spec.feature_views
        fset = feats.compute_features(
            model,
            backbone,
            train_imgs,
            val_imgs,
            train_transform=train_transform(pre, augment=spec.augment),
            eval_transform=eval_transform(pre),
            views=views,
            device=device,
            precision=precision,
            seed=spec.train.seed,
            key_parts={
                "data": split.content_hash,
                "train": train_imgs.paths,
                "val": val_imgs.paths,
                "backbone": spec.backbone,
                "weights": built.weights_source,
                "transform": {"pre": pre.to_dict(), "augment": spec.augment},
            },
            on_progress=lambda d, t, m: status(m, d, t),
        )
        cache_seconds = fset.seconds
        head = get_module(model, backbone.head)
        history = fit(
            head,
            feats.FeatureViews(fset.train, fset.train_labels),
            feats.Features(fset.val, fset.val_labels),
            replace(spec.train, channels_last=False),
            on_progress=progress,
            should_stop=should_stop,
            **resume_kw,
        )
        head.load_state_dict(history.best_state)
        best_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    elif rest_of_model is not None:
        history, cache_seconds = _train_partial_cached(
            model,
            backbone,
            rest_of_model,
            ImageBatches(train_imgs, pre, train=True, augment=spec.augment, device=device),
            ImageBatches(val_imgs, pre, train=False, device=device),
            spec,
            device=device,
            precision=precision,
            progress=progress,
            should_stop=should_stop,
            status=status,
            resume_kw=resume_kw,
        )
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        if spec.fast:
            train_data = ImageBatches(
                train_imgs, pre, train=True, augment=spec.augment, device=device
            )
            val_data = ImageBatches(val_imgs, pre, train=False, device=device)
        else:
            train_data = TensorImageDataset(train_imgs, train_transform(pre, augment=spec.augment))
            val_data = TensorImageDataset(val_imgs, eval_transform(pre))
        history = fit(
            model,
            train_data,
            val_data,
            spec.train,
            on_progress=progress,
            should_stop=should_stop,
            set_train_mode=set_train_mode,
            head_names=head_parameter_names(model, backbone),
            **resume_kw,
        )
        best_state = history.best_state
        model.load_state_dict(best_state)
    store.write_json(
        run_id,
        TIMINGS_FILE,
        {
            "decode_seconds": decode_seconds,
            "cache_seconds": cache_seconds,
            "train_seconds": history.seconds,
            "epoch_seconds": [e.seconds for e in history.epochs],
            "path": "cached features"
            if spec.strategy == "feature_extractor" and spec.fast
            else "cached prefix"
            if rest_of_model is not None
            else "images",
        },
    )

    # Weights, preprocessing and validation predictions of the best epoch.
    model.eval()
    run_dir = store.run_dir(run_id)
    atomic_torch_save(best_state, run_dir / WEIGHTS_FILE)
    store.write_json(
        run_id,
        META_FILE,
        {
            "run_id": run_id,
            "backbone": spec.backbone,
            "strategy": spec.strategy,
            "classes": split.classes,
            "preprocessing": pre.to_dict(),
            "weights_source": built.weights_source,
            "best_epoch": history.best_epoch,
        },
    )
    if spec.strategy == "feature_extractor" and spec.fast:
        # The validation features are cached: the head alone gives the model's predictions.
        val_loader = make_loader(
            feats.Features(fset.val, fset.val_labels),
            len(val_imgs.images),
            shuffle=False,
            generator=None,
            device=device,
        )
        _, _, probs, labels = evaluate(
            head, val_loader, device=device, channels_last=False, return_outputs=True
        )
    else:
        val_loader = make_loader(
            TensorImageDataset(val_imgs, eval_transform(pre)),
            eval_batch_size(spec.train.batch_size, device),
            shuffle=False,
            generator=None,
            device=device,
        )
        _, _, probs, labels = evaluate(
            model, val_loader, device=device, precision=precision, return_outputs=True
        )
    store.write_json(run_id, PREDICTIONS_FILE, _predictions(split, val_imgs.paths, probs, labels))
    summary = _history_summary(history)
    if history.status != "cancelled":
        ckpt_path.unlink(missing_ok=True)  # done: weights.pt is the result
    store.finish(
        run_id,
        "cancelled" if history.status == "cancelled" else "done",
        best_val_acc=summary["best_val_acc"],
        final_val_acc=summary["final_val_acc"],
        train_seconds=elapsed_before + time.perf_counter() - t_start,
        epoch=len(history.epochs),
        phase=f"cache {cache_seconds:.1f}s" if cache_seconds else None,
        error=f"skipped {len(train_imgs.skipped) + len(val_imgs.skipped)} unreadable file(s)"
        if train_imgs.skipped or val_imgs.skipped
        else None,
    )


def _train_partial_cached(
    model: torch.nn.Module,
    backbone,
    parts: tuple[torch.nn.Module, torch.nn.Module],
    train_data: ImageBatches,
    val_data: ImageBatches,
    spec: RunSpec,
    *,
    device: torch.device,
    precision: str,
    progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    status: StatusFn,
    resume_kw: dict | None = None,
) -> tuple[History, float]:
    """partial_finetune with the frozen prefix run once per augmented view, not every epoch.

    Trains `model` in place (through the rest-of-model modules it shares); returns the history
    and the seconds spent caching. Without room for one cached view, the prefix runs every
    batch without autograd instead.
    """
    prefix, rest = parts
    head_ids = {id(p) for p in get_module(model, backbone.head).parameters()}
    views = 1 if spec.augment == "none" else spec.feature_views
    cache = None
    try:
        cache = feats.compute_prefix_cache(
            prefix,
            train_data,
            val_data,
            views=views,
            device=device,
            precision=precision,
            on_progress=lambda d, t, m: status(m, d, t),
            should_stop=should_stop,
        )
    except Cancelled:
        return History(status="cancelled", device=str(device), precision=precision), 0.0
    if cache is None:
        net = torch.nn.Sequential(feats.FrozenPrefix(prefix), rest)
        train_set, val_set, seconds = train_data, val_data, 0.0
    else:
        net = rest
        train_set = feats.FeatureViews(cache.train, cache.train_labels)
        val_set = feats.Features(cache.val, cache.val_labels)
        seconds = cache.seconds
    history = fit(
        net,
        train_set,
        val_set,
        spec.train,
        on_progress=progress,
        should_stop=should_stop,
        set_train_mode=set_train_mode,
        head_names={n for n, p in net.named_parameters() if id(p) in head_ids},
        **(resume_kw or {}),
    )
    net.load_state_dict(history.best_state)
    return history, seconds


def _predictions(
    split: DataSplit, paths: list[str], probs: torch.Tensor, labels: torch.Tensor
) -> dict:
    root = str(split.root)
    rows = []
    for path, p, y in zip(paths, probs.tolist(), labels.tolist(), strict=True):
        pred = max(range(len(p)), key=p.__getitem__)
        rows.append(
            {
                "path": path,
                "rel": path[len(root) + 1 :] if path.startswith(root) else path,
                "true": y,
                "pred": pred,
                "confidence": p[pred],
                "probs": [round(v, 5) for v in p],
            }
        )
    return {"classes": split.classes, "items": rows}


def run_summary(record: dict) -> dict:
    """The JSON object of the CLI contract for one run."""
    return {
        "run_id": record["id"],
        "name": record.get("name"),
        "group_id": record.get("group_id"),
        "status": record["status"],
        "backbone": record["backbone"],
        "strategy": record["strategy"],
        "seed": record.get("seed"),
        "best_val_acc": record.get("best_val_acc"),
        "final_val_acc": record.get("final_val_acc"),
        "epochs": record.get("epoch") or 0,
        "epochs_total": record.get("epochs_total"),
        "train_seconds": record.get("train_seconds"),
        "num_train": record.get("num_train"),
        "num_val": record.get("num_val"),
        "num_classes": record.get("num_classes"),
        "trainable_params": record.get("trainable_params"),
        "total_params": record.get("total_params"),
        "device": record.get("device"),
        "data": record.get("data_path"),
        "recipe": record.get("recipe"),
        "created": record.get("created"),
        "error": record.get("error"),
    }
