"""The training loop: plain functions, one optional progress callback.

`fit` trains any module (a whole network, or only a head on cached features) with
cross-entropy, keeps the weights of the best validation accuracy and returns a `History`.
`should_stop` is checked between batches: a stopped run keeps the epochs it finished.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from tl_core.errors import LabError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
BN_MODES = ("train", "frozen")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes one training run; the defaults are the classic recipe's."""

    # Each field's metadata gives its command-line help (see tl_core/cli/options.py).
    epochs: int = field(default=25, metadata={"min": 1, "help": "passes over the training set"})
    batch_size: int = field(default=16, metadata={"min": 1, "help": "images per step"})
    lr: float = field(default=0.001, metadata={"help": "learning rate of the new head"})
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    # "step": x gamma every step_size epochs; "cosine": to 0 over all epochs; "onecycle": up
    # from lr/25 to lr (over the warm-up, else the first 30 %), then a cosine to ~0.
    schedule: str = field(
        default="none",
        metadata={
            "choices": SCHEDULES,
            "help": "step: x gamma every step_size epochs; cosine: to 0 over all epochs; "
            "onecycle: up to lr, then a cosine to ~0",
        },
    )
    step_size: int = field(default=7, metadata={"min": 1, "help": "epochs per step (step)"})
    gamma: float = field(default=0.1, metadata={"help": "lr factor per step (step)"})
    # lr of the pretrained layers = lr * this; the new head gets lr. 1.0 (today's behaviour)
    # until measurements justify another default (README, "Fine-tuning options").
    backbone_lr_mult: float = field(
        default=1.0,
        metadata={"help": "learning rate of pretrained layers relative to the new head"},
    )
    bn: str = field(  # "frozen": every BatchNorm keeps its running statistics (eval mode)
        default="train",
        metadata={
            "choices": BN_MODES,
            "help": "BatchNorm running statistics: train (updated) or frozen (kept)",
        },
    )
    warmup_epochs: int = field(  # lr rises linearly from ~0 over these epochs, batch by batch
        default=0,
        metadata={"help": "epochs over which the learning rate rises linearly from ~0"},
    )
    probe_epochs: int = field(
        default=10,
        metadata={"min": 1, "help": "probe_finetune: epochs of the head alone on cached features"},
    )
    early_stopping: int = field(
        default=0,
        metadata={
            "metavar": "EPOCHS",
            "help": "stop after this many epochs without a better validation accuracy (0: never)",
        },
    )
    seed: int = 0
    device: str = field(default="auto", metadata={"choices": DEVICES})
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})
    channels_last: bool = field(default=True, metadata={"help": "use the NCHW memory layout"})
    validate_every: int = field(
        default=1, metadata={"help": "epochs between validations (0: only after the last)"}
    )

    def validate(self) -> TrainConfig:
        problems = []
        if not 1 <= self.epochs <= 1000:
            problems.append(f"epochs must be between 1 and 1000, got {self.epochs}")
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch size must be between 1 and 4096, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr) and self.lr <= 10):
            problems.append(f"learning rate must be a positive number up to 10, got {self.lr}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            problems.append(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            problems.append(
                f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if self.precision not in PRECISIONS:
            problems.append(
                f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.device not in DEVICES:
            problems.append(f"unknown device {self.device!r}; choose one of: {', '.join(DEVICES)}")
        if not 0 < self.backbone_lr_mult <= 1:
            problems.append(
                f"backbone lr multiplier must be in (0, 1], got {self.backbone_lr_mult}"
            )
        if self.bn not in BN_MODES:
            problems.append(f"unknown bn mode {self.bn!r}; choose one of: {', '.join(BN_MODES)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            problems.append(
                f"warm-up epochs must be at least 0 and fewer than the epochs ({self.epochs}), "
                f"got {self.warmup_epochs}"
            )
        if not 1 <= self.probe_epochs <= 1000:
            problems.append(f"probe epochs must be between 1 and 1000, got {self.probe_epochs}")
        if self.step_size < 1 or not 0 < self.gamma <= 1:
            problems.append("step schedule needs step_size >= 1 and 0 < gamma <= 1")
        if self.early_stopping < 0 or self.validate_every < 0:
            problems.append("early_stopping and validate_every must be >= 0")
        if problems:
            raise LabError("; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    seconds: float
    lr: float


@dataclass
class Progress:
    """What the progress callback receives: a batch finished, or an epoch."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float  # running mean over the epoch so far
    acc: float
    epoch_stats: EpochStats | None = None  # set once the epoch (with validation) is done


@dataclass
class History:
    epochs: list[EpochStats] = field(default_factory=list)
    best_val_acc: float = 0.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    status: str = "done"  # or "cancelled"
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0

    @property
    def final_val_acc(self) -> float | None:
        done = [e.val_acc for e in self.epochs if e.val_acc is not None]
        return done[-1] if done else None


class Cancelled(Exception):
    pass


# ---------------------------------------------------------------------------- environment


def usable_cpus() -> int:
    """CPUs this process may use: affinity mask and cgroup quota, not the host's core count."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure_threads() -> int:
    n = usable_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LabError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device auto or cpu"
        )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise LabError("device 'mps' was asked for but is not available; use --device auto or cpu")
    if name not in DEVICES:
        raise LabError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    checks = [
        getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(check is not None and check() for check in checks)


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "fp32":
        return "fp32"
    if name == "bf16":
        return "bf16"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


# ---------------------------------------------------------------------------- the loop


def make_optimizer(model: nn.Module, config: TrainConfig, head_names: set[str] | None = None):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise LabError("nothing to train: every parameter is frozen")
    if head_names is not None and config.backbone_lr_mult != 1.0:
        head = [p for n, p in params if n in head_names]
        body = [p for n, p in params if n not in head_names]
        groups = [{"params": head, "lr": config.lr}]
        if body:
            groups.append({"params": body, "lr": config.lr * config.backbone_lr_mult})
    else:
        groups = [{"params": [p for _, p in params], "lr": config.lr}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate at optimizer step `step` (from 0) as a fraction of `config.lr`.

    "none", "step" and "cosine" change once per epoch, as torch's StepLR and
    CosineAnnealingLR stepped per epoch do; a warm-up multiplies that by a linear ramp over
    its first `warmup_epochs` epochs, batch by batch. "onecycle" (Smith's 1cycle, without
    momentum cycling) rises from 1/25 to 1 by half a cosine and then falls to ~0 by another.
    """
    spe = max(1, steps_per_epoch)
    warm = config.warmup_epochs * spe
    if config.schedule == "onecycle":
        total = config.epochs * spe
        rise = warm or max(1, round(0.3 * total))
        if step < rise:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * step / rise)) / 2
        t = min(1.0, (step - rise) / max(1, total - rise))
        return 1e-4 / 25 + (1 - 1e-4 / 25) * (1 + math.cos(math.pi * t)) / 2
    epoch = step // spe
    if config.schedule == "step":
        decay = config.gamma ** (epoch // config.step_size)
    elif config.schedule == "cosine":
        decay = (1 + math.cos(math.pi * epoch / config.epochs)) / 2
    else:
        decay = 1.0
    ramp = (step + 1) / warm if step < warm else 1.0
    return ramp * decay


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int = 1):
    """A scheduler to step after every optimizer step; None for a constant rate.

    Every parameter group keeps its own base rate (the backbone's `lr * backbone_lr_mult`)
    and gets the same factor, so the ratio between groups holds throughout.
    """
    if config.schedule == "none" and config.warmup_epochs == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config, steps_per_epoch)
    )


def train_mode_setter(config: TrainConfig, base: Callable[[nn.Module], None] | None):
    """The function that puts a model in training mode under `config.bn`.

    `bn="frozen"` keeps every BatchNorm layer in eval mode while the rest trains: its
    running statistics stay the pretrained ones, bit for bit (its scale and shift still
    learn when they are trainable), which small batches would otherwise make noisy.
    """
    base = base or (lambda m: m.train())
    if config.bn == "train":
        return base

    def frozen_bn(model: nn.Module) -> None:
        base(model)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    return frozen_bn


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    precision: str,
    channels_last: bool,
    set_train_mode: Callable[[nn.Module], None],
    on_batch: Callable[[int, int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    scheduler=None,
) -> tuple[float, float]:
    """One pass over `loader`, stepping `scheduler` after each batch; returns (loss, accuracy)."""
    set_train_mode(model)
    criterion = nn.CrossEntropyLoss()
    total_loss, correct, seen = 0.0, 0, 0
    batches = len(loader)
    for b, (x, y) in enumerate(loader, start=1):
        if should_stop is not None and should_stop():
            raise Cancelled
        x = _to_device(x, device, channels_last)
        y = y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x)
            loss = criterion(logits.float(), y)
        if not torch.isfinite(loss):
            raise LabError(
                f"the loss became {loss.item()} (not a finite number) at batch {b}: "
                "training diverged; lower the learning rate and try again"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = y.shape[0]
        total_loss += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        if on_batch is not None:
            on_batch(b, batches, total_loss / seen, correct / seen)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = True,
    return_outputs: bool = False,
):
    """(mean loss, accuracy), plus (probabilities, labels) when `return_outputs`."""
    was_training = model.training
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct, seen = 0.0, 0, 0
    probs, labels = [], []
    for x, y in loader:
        x = _to_device(x, device, channels_last)
        y = y.to(device)
        with autocast(device, precision):
            logits = model(x).float()
        total_loss += criterion(logits, y).item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += y.shape[0]
        if return_outputs:
            probs.append(torch.softmax(logits, 1).cpu())
            labels.append(y.cpu())
    if was_training:
        model.train()
    result = (total_loss / max(seen, 1), correct / max(seen, 1))
    if return_outputs:
        return (
            *result,
            torch.cat(probs) if probs else torch.empty(0),
            torch.cat(labels) if labels else torch.empty(0),
        )
    return result


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


def fit(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    set_train_mode: Callable[[nn.Module], None] | None = None,
    head_names: set[str] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
) -> History:
    """Train `model` on `train_data`, validating on `val_data` after each epoch.

    `set_train_mode` puts the model in training mode (by default `model.train()`; pass
    `tl_core.models.set_train_mode` to keep frozen BatchNorm layers in eval mode).
    `head_names` are the parameters of the new head, for `backbone_lr_mult`.
    `checkpoint` receives, after every epoch, everything needed to continue (weights,
    optimizer and scheduler state, random generators, history); passing that dict back as
    `resume` continues from the epoch after it exactly as if nothing had stopped.
    """
    config.validate()
    if len(train_data) == 0:
        raise LabError("the training set is empty")
    if len(val_data) == 0:
        raise LabError("the validation set is empty")
    configure_threads()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    generator = seed_everything(config.seed)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    train_mode = train_mode_setter(config, set_train_mode)
    optimizer = make_optimizer(model, config, head_names)
    train_loader = make_loader(
        train_data, config.batch_size, shuffle=True, generator=generator, device=device
    )
    scheduler = make_scheduler(optimizer, config, len(train_loader))
    val_loader = make_loader(
        val_data,
        eval_batch_size(config.batch_size, device),
        shuffle=False,
        generator=None,
        device=device,
    )

    history = History(device=str(device), precision=precision)
    started = time.perf_counter()
    since_best = 0
    first_epoch = 1
    if resume is not None:
        first_epoch, since_best = _restore(resume, model, optimizer, scheduler, generator, history)
    for epoch in range(first_epoch, config.epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]

        def on_batch(b: int, n: int, loss: float, acc: float, _epoch: int = epoch) -> None:
            if on_progress is not None:
                on_progress(Progress(_epoch, config.epochs, b, n, loss, acc))

        try:
            train_loss, train_acc = train_one_epoch(
                model,
                train_loader,
                optimizer,
                device=device,
                precision=precision,
                channels_last=config.channels_last,
                set_train_mode=train_mode,
                on_batch=on_batch,
                should_stop=should_stop,
                scheduler=scheduler,
            )
        except Cancelled:
            history.status = "cancelled"
            break
        last = epoch == config.epochs
        do_val = last or (config.validate_every and epoch % config.validate_every == 0)
        val_loss = val_acc = None
        if do_val:
            val_loss, val_acc = evaluate(
                model,
                val_loader,
                device=device,
                precision=precision,
                channels_last=config.channels_last,
            )
        stats = EpochStats(
            epoch, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - t0, lr
        )
        history.epochs.append(stats)
        if val_acc is not None:
            if history.best_state is None or val_acc > history.best_val_acc:
                history.best_val_acc, history.best_epoch = val_acc, epoch
                history.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
                since_best = 0
            else:
                since_best += 1
        if checkpoint is not None:
            checkpoint(
                _snapshot(epoch, since_best, model, optimizer, scheduler, generator, history)
            )
        if on_progress is not None:
            n = len(train_loader)
            on_progress(
                Progress(epoch, config.epochs, n, n, train_loss, train_acc, epoch_stats=stats)
            )
        if config.early_stopping and since_best >= config.early_stopping:
            break
    history.seconds = time.perf_counter() - started
    if history.best_state is None:
        history.best_state = copy.deepcopy(
            {k: v.detach().cpu() for k, v in model.state_dict().items()}
        )
    return history


def _snapshot(epoch, since_best, model, optimizer, scheduler, generator, history: History) -> dict:
    """Everything `fit` needs to continue after `epoch`, on the CPU."""
    return {
        "version": 1,
        "epoch": epoch,
        "since_best": since_best,
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state(),
        "torch_rng": torch.random.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python_rng": random.getstate(),
        "numpy_rng": _numpy_state_as_lists(),
        "epochs": [asdict(e) for e in history.epochs],
        "best_val_acc": history.best_val_acc,
        "best_epoch": history.best_epoch,
        "best_state": history.best_state,
    }


def _restore(
    state: dict, model, optimizer, scheduler, generator, history: History
) -> tuple[int, int]:
    """Load a `_snapshot` into the objects `fit` made; returns (next epoch, since_best)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.random.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    history.epochs = [EpochStats(**e) for e in state["epochs"]]
    history.best_val_acc = state["best_val_acc"]
    history.best_epoch = state["best_epoch"]
    history.best_state = state["best_state"]
    return state["epoch"] + 1, state["since_best"]


def _numpy_state_as_lists() -> tuple:
    # Plain Python values, so the checkpoint loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
