"""The learning-rate finder: loss against an exponentially rising learning rate.

Leslie Smith's range test, as fastai's `lr_find` runs it: train the model as the strategy
would, on real mini-batches, while the learning rate grows by the same factor every batch
from `start_lr` to `end_lr`; smooth the loss (an exponential moving average with bias
correction), and stop once it has diverged (more than `DIVERGE` times its minimum, or not a
number). The curve is the result, since a single suggested value is fragile; the suggestion
is the rate at the smoothed minimum divided by 10 (fastai's `lr_min`), a rate where the loss
still falls fast and is far from diverging (leaving out the curve's first tenth, where the
average has seen too few batches).

The finder works on a fresh model (pretrained weights and a new head, as a run starts) and
throws it away; nothing is stored. Every parameter group keeps its ratio: with
`backbone_lr_mult` the backbone's rate is that fraction of the rate on the curve, which is
the head's (the `--lr` a run takes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from tl_core.errors import LabError
from tl_core.progress import Progress, ProgressFn
from tl_core.train import (
    Cancelled,
    TrainConfig,
    _to_device,
    autocast,
    make_loader,
    make_optimizer,
    seed_everything,
    train_mode_setter,
)

DIVERGE = 4.0  # stop once the smoothed loss exceeds this many times its minimum
SMOOTHING = 0.98  # the moving average's weight on the past (fastai's beta)
MAX_ITERATIONS = 300


@dataclass(frozen=True)
class LRFindConfig:
    """The sweep: from `start_lr` to `end_lr` over at most `num_iter` mini-batches."""

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = field(
        default=100, metadata={"min": 1, "help": f"mini-batches at most (5 to {MAX_ITERATIONS})"}
    )

    def validate(self) -> LRFindConfig:
        if not 0 < self.start_lr < self.end_lr <= 100:
            raise LabError(
                f"the sweep needs 0 < start lr < end lr <= 100, got {self.start_lr} and "
                f"{self.end_lr}; try --start-lr 1e-7 --end-lr 10"
            )
        if not 5 <= self.num_iter <= MAX_ITERATIONS:
            raise LabError(
                f"the sweep takes between 5 and {MAX_ITERATIONS} mini-batches, got {self.num_iter}"
            )
        return self


@dataclass
class LRFindResult:
    lrs: list[float]  # the head's learning rate at each batch
    losses: list[float]  # the smoothed loss after that batch
    raw_losses: list[float]
    suggested_lr: float | None
    stopped: str  # "diverged" or "end" (the sweep reached end_lr)

    def to_dict(self) -> dict:
        return asdict(self)


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """The rate at the smoothed loss's minimum, divided by 10; None without a curve.

    The first tenth of the curve is left out: there the average has seen only a few
    batches, and one lucky batch would put the minimum at the smallest rate tried.
    """
    skip = len(lrs) // 10
    finite = [
        (loss, lr) for lr, loss in list(zip(lrs, losses, strict=True))[skip:] if math.isfinite(loss)
    ]
    if len(finite) < 2:
        return None
    return min(finite)[1] / 10


def lr_sweep(
    model: nn.Module,
    train_data,
    config: TrainConfig,
    sweep: LRFindConfig,
    *,
    head_names: set[str] | None = None,
    set_train_mode: Callable[[nn.Module], None] | None = None,
    device: torch.device,
    precision: str = "fp32",
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LRFindResult:
    """Train `model` in place on `train_data` with a rising rate; the loss at each rate.

    The optimizer, its parameter groups (`backbone_lr_mult`), BatchNorm mode (`config.bn`)
    and the training mode are a run's own; only the rate changes, by a factor of
    (end_lr / start_lr) ** (1 / (num_iter - 1)) per batch.
    """
    sweep.validate()
    config = replace(config, lr=sweep.start_lr).validate()
    generator = seed_everything(config.seed)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config, head_names)
    base = [group["lr"] for group in optimizer.param_groups]
    loader = make_loader(
        train_data, config.batch_size, shuffle=True, generator=generator, device=device
    )
    train_mode_setter(config, set_train_mode)(model)
    criterion = nn.CrossEntropyLoss()
    growth = (sweep.end_lr / sweep.start_lr) ** (1 / (sweep.num_iter - 1))
    lrs, smoothed, raw = [], [], []
    average, best, stopped = 0.0, math.inf, "end"
    while len(lrs) < sweep.num_iter and stopped == "end":
        for x, y in loader:
            if should_stop is not None and should_stop():
                raise Cancelled
            step = len(lrs)
            factor = growth**step
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * factor
            x = _to_device(x, device, config.channels_last)
            y = y.to(device)
            with autocast(device, precision):
                loss = criterion(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smooth = average / (1 - SMOOTHING ** (step + 1))
            lrs.append(sweep.start_lr * factor)
            raw.append(value)
            smoothed.append(smooth)
            if on_batch is not None:
                on_batch(step + 1, sweep.num_iter)
            best = min(best, smooth)
            if not math.isfinite(smooth) or smooth > DIVERGE * best:
                stopped = "diverged"
                break
            if len(lrs) >= sweep.num_iter:
                break
    return LRFindResult(lrs, smoothed, raw, suggest_lr(lrs, smoothed), stopped)


def _sweep_progress(on_progress: ProgressFn) -> Callable[[int, int], None]:
    def on_batch(done: int, total: int) -> None:
        on_progress(Progress("sweep", done, total, "learning-rate sweep"))

    return on_batch


def find_lr(
    spec,
    sweep: LRFindConfig | None = None,
    *,
    on_progress: ProgressFn | None = None,
) -> dict:
    """The finder for a run's spec (`tl_core.spec.RunSpec`): its data, model and strategy.

    `on_progress` receives the decoding of the training images, then the sweep's batches
    (stage "sweep"), as `tl_core.progress.Progress` events.

    Returns the JSON of the CLI contract: `lrs`, `losses`, `suggested_lr`, plus the raw
    losses, why it stopped, and what it ran on.
    """
    from tl_core.batches import ImageBatches
    from tl_core.data.folder import decode_items, scan_dataset
    from tl_core.models import build_model, get_backbone, head_parameter_names, set_train_mode
    from tl_core.train import configure_threads, resolve_device, resolve_precision
    from tl_core.transforms import Preprocessing

    sweep = (sweep or LRFindConfig()).validate()
    spec.validate()
    if spec.init_from:
        raise LabError("the finder starts from ImageNet weights; drop --init-from")
    configure_threads()
    split = scan_dataset(
        spec.data, val_fraction=spec.val_fraction, seed=spec.split_seed, per_class=spec.per_class
    )
    backbone = get_backbone(spec.backbone)
    pre = Preprocessing.for_backbone(backbone)
    images = decode_items(split.train, pre.resize_size, on_progress=on_progress)
    if not images.images:
        raise LabError("no readable training images; check the data set on the Data page")
    seed_everything(spec.train.seed)
    # probe_finetune's second phase trains every layer, as full_finetune does.
    built = build_model(
        spec.backbone,
        len(split.classes),
        spec.strategy,
        trainable_blocks=spec.trainable_blocks,
        weights_file=spec.weights,
    )
    device = resolve_device(spec.train.device)
    result = lr_sweep(
        built.model,
        ImageBatches(images, pre, train=True, augment=spec.augment, device=device),
        spec.train,
        sweep,
        head_names=head_parameter_names(built.model, backbone),
        set_train_mode=set_train_mode,
        device=device,
        precision=resolve_precision(spec.train.precision, device),
        on_batch=None if on_progress is None else _sweep_progress(on_progress),
    )
    return {
        **result.to_dict(),
        "backbone": spec.backbone,
        "strategy": spec.strategy,
        "batch_size": spec.train.batch_size,
        "backbone_lr_mult": spec.train.backbone_lr_mult,
        "num_train": len(images.images),
        "start_lr": sweep.start_lr,
        "end_lr": sweep.end_lr,
    }
