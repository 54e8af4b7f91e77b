"""The optimizer and the learning-rate schedule of a `TrainConfig`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from tl_core.errors import LabError

if TYPE_CHECKING:
    from tl_core.train import TrainConfig


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
